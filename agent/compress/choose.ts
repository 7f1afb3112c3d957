/**
 * Per-link codec choice: which compression a participant should use this round, from its measured
 * upload throughput and the time the round allows for the upload. Pure: no I/O, no clocks.
 *
 * The ladder (CODEC_LADDER) runs from the least to the most lossy codec; the chooser takes the first rung whose
 * expected upload (the exact encoded size from FORMAT.md plus the wire frames around it) fits the
 * budget, and the last rung when none does. Rung order comes from bench/compress-accuracy
 * (accuracy after the same number of FedAvg rounds), not from size alone.
 */
import { FRAME_HEADER_BYTES } from '../transport/frame';
import { DEFAULT_BLOCK_SIZE, DEFAULT_K, type CodecOptions } from './codec';
import { CODECS, CodecId, encodedSize, type CodecName } from './format';

/** Default frame size limit: the link's default MQTT packet limit (128 KiB). */
export const DEFAULT_MAX_FRAME_BYTES = 128 * 1024;
/**
 * Default per-frame overhead besides the 32-byte frame header: the update's JSON metadata (about
 * 210 bytes) and the MQTT PUBLISH header with its topic (about 45). Callers that know theirs pass it.
 */
export const DEFAULT_FRAME_OVERHEAD_BYTES = 256;

/**
 * Weakest to strongest compression. Each rung lists alternatives; the first allowed one is used.
 * Measured by bench/compress-accuracy (20 FedAvg rounds, MNIST Dirichlet(0.5) and FEMNIST): int8
 * and int4 lose nothing measurable; top-k 10% + int8 with error feedback is as accurate as int4
 * and 3% smaller, so int4 is only its stand-in for fleets that disallow top-k (nodes that cannot
 * keep a residual); top-k 1% + int8 costs 0.4 (MNIST) to 1.8 (FEMNIST) points at the same round
 * count; 0.1% costs 2-5 points and is the last resort.
 */
export const CODEC_LADDER: readonly (readonly CodecOptions[])[] = [
  [{ codec: 'none' }],
  [{ codec: 'int8', blockSize: DEFAULT_BLOCK_SIZE }],
  [{ codec: 'topk-int8', k: 0.1, blockSize: DEFAULT_BLOCK_SIZE }, { codec: 'int4', blockSize: DEFAULT_BLOCK_SIZE, stochastic: true }, { codec: 'topk', k: 0.1 }],
  [{ codec: 'topk-int8', k: 0.01, blockSize: DEFAULT_BLOCK_SIZE }, { codec: 'topk', k: 0.01 }],
  [{ codec: 'topk-int8', k: 0.001, blockSize: DEFAULT_BLOCK_SIZE }, { codec: 'topk', k: 0.001 }],
];

/** The codec used when the link speed is unknown: 4x smaller than float32 at no measurable loss. */
export const UNKNOWN_LINK_CODEC: CodecOptions = { codec: 'int8', blockSize: DEFAULT_BLOCK_SIZE };

export interface ChooseCodecInput {
  /** Values in the update (the model's parameter count). Integer >= 1. */
  paramCount: number;
  /** Measured upload throughput in bytes per second; null (or NaN, <= 0) when unknown. */
  upBytesPerSecond: number | null;
  /** Seconds the round allows for this participant's upload. > 0 (Infinity allowed). */
  uploadBudgetSeconds: number;
  /** A codec pinned in config (per fleet or per node): always used as is. */
  pinned?: CodecOptions;
  /** Codecs the fleet accepts; default all. */
  allowed?: readonly CodecName[];
  /** Largest frame on the wire (the link's packet limit minus the MQTT header). Default 128 KiB. */
  maxFrameBytes?: number;
  /** Bytes each frame carries besides the 32-byte header and the data: metadata, MQTT header. Default 256. */
  frameOverheadBytes?: number;
}

export interface CodecDecision {
  codec: CodecOptions;
  /** Bytes on the wire: the encoded payload plus its frames' headers and metadata. */
  expectedBytes: number;
  /** expectedBytes / upBytesPerSecond, or null when the link speed is unknown. */
  expectedSeconds: number | null;
  reason: string;
}

const KB = (b: number): string => (b >= 1e6 ? `${(b / 1e6).toFixed(2)} MB` : `${(b / 1e3).toFixed(1)} kB`);
const secs = (s: number): string => `${s < 10 ? s.toFixed(2) : s.toFixed(1)} s`;

/** Human label of a codec choice, e.g. "topk-int8 k=0.01". */
export function codecLabel(c: CodecOptions): string {
  const parts: string[] = [c.codec];
  if (c.codec === 'topk' || c.codec === 'topk-int8') parts.push(`k=${c.k ?? DEFAULT_K}`);
  if ((c.codec === 'int8' || c.codec === 'int4' || c.codec === 'topk-int8') && c.stochastic) parts.push('stochastic');
  return parts.join(' ');
}

/** Encoded payload size (FORMAT.md) of `paramCount` values under `c`, with the facade's defaults: exact for dense codecs, for top-k the largest it can be (its index stream depends on where the kept values are). */
export function payloadBytes(paramCount: number, c: CodecOptions): number {
  const codec = CODECS.indexOf(c.codec) as CodecId;
  if (codec < 0) throw new RangeError(`codec '${String(c.codec)}' is not one of ${CODECS.join(', ')}`);
  const blockSize = c.blockSize ?? DEFAULT_BLOCK_SIZE;
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new RangeError(`blockSize must be an integer >= 1, got ${blockSize}`);
  const kf = c.k ?? DEFAULT_K;
  if (!(kf > 0 && kf <= 1)) throw new RangeError(`k must be a fraction in (0, 1], got ${kf}`);
  const sparse = codec === CodecId.Topk || codec === CodecId.TopkInt8;
  const k = sparse ? Math.min(paramCount, Math.max(1, Math.round(kf * paramCount))) : 0;
  return encodedSize({ codec, n: paramCount, blockSize, k });
}

/** Bytes on the wire for a payload of `payload` bytes: data plus, per frame, the header and overhead. */
export function framedBytes(payload: number, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES, frameOverheadBytes = DEFAULT_FRAME_OVERHEAD_BYTES): number {
  const perFrame = FRAME_HEADER_BYTES + frameOverheadBytes;
  const room = maxFrameBytes - perFrame;
  if (room < 1) throw new RangeError(`a ${maxFrameBytes}-byte frame leaves no room for data after ${perFrame} bytes of header and overhead`);
  const frames = Math.max(1, Math.ceil(payload / room));
  return payload + frames * perFrame;
}

function checkInput(input: ChooseCodecInput): void {
  if (typeof input !== 'object' || input === null) throw new TypeError('chooseCodec: input must be an object');
  const { paramCount, uploadBudgetSeconds, allowed, maxFrameBytes, frameOverheadBytes } = input;
  if (!Number.isInteger(paramCount) || paramCount < 1 || paramCount > 0xffffffff) {
    throw new RangeError(`chooseCodec: paramCount must be an integer in 1..2^32-1, got ${paramCount}`);
  }
  if (typeof uploadBudgetSeconds !== 'number' || !(uploadBudgetSeconds > 0)) {
    throw new RangeError(`chooseCodec: uploadBudgetSeconds must be a number > 0, got ${uploadBudgetSeconds}`);
  }
  if (allowed !== undefined) {
    if (!Array.isArray(allowed) || allowed.length === 0) throw new RangeError('chooseCodec: allowed must be a non-empty list of codec names');
    for (const a of allowed) if (!CODECS.includes(a)) throw new RangeError(`chooseCodec: allowed codec '${String(a)}' is not one of ${CODECS.join(', ')}`);
  }
  if (maxFrameBytes !== undefined && (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 1)) throw new RangeError(`chooseCodec: maxFrameBytes must be a positive integer, got ${maxFrameBytes}`);
  if (frameOverheadBytes !== undefined && (!Number.isInteger(frameOverheadBytes) || frameOverheadBytes < 0)) throw new RangeError(`chooseCodec: frameOverheadBytes must be a non-negative integer, got ${frameOverheadBytes}`);
}

/** The link speed if it is a usable measurement, else null. */
function linkSpeed(v: unknown): number | null {
  return typeof v === 'number' && v > 0 ? v : null; // NaN, negative, 0 and non-numbers: unknown
}

/**
 * Picks the least lossy codec whose expected upload fits `uploadBudgetSeconds` on this link; the
 * strongest allowed one when nothing fits; int8 when the link speed is unknown; the pinned codec
 * whenever there is one. Throws RangeError/TypeError on a bad paramCount, budget, or codec list.
 */
export function chooseCodec(input: ChooseCodecInput): CodecDecision {
  checkInput(input);
  const { paramCount, uploadBudgetSeconds: budget, pinned } = input;
  const speed = linkSpeed(input.upBytesPerSecond);
  const wire = (c: CodecOptions): number => framedBytes(payloadBytes(paramCount, c), input.maxFrameBytes, input.frameOverheadBytes);
  const decision = (codec: CodecOptions, reason: string): CodecDecision => {
    const expectedBytes = wire(codec);
    return { codec: { ...codec }, expectedBytes, expectedSeconds: speed === null ? null : expectedBytes / speed, reason };
  };
  const unknownWhy = input.upBytesPerSecond === null || input.upBytesPerSecond === undefined
    ? 'link speed unknown'
    : `link speed ${input.upBytesPerSecond} is not a usable measurement`;

  if (pinned !== undefined) {
    if (typeof pinned !== 'object' || pinned === null || typeof pinned.codec !== 'string') throw new TypeError('chooseCodec: pinned must be codec options like { codec: \'int8\' }');
    const d = decision(pinned, '');
    const fit = d.expectedSeconds === null ? unknownWhy : `${secs(d.expectedSeconds)} of a ${secs(budget)} budget`;
    d.reason = `pinned ${codecLabel(pinned)} (${KB(d.expectedBytes)}, ${fit})`;
    return d;
  }

  const allowed = new Set<CodecName>(input.allowed ?? CODECS);
  const ladder = CODEC_LADDER.map((rung) => rung.find((c) => allowed.has(c.codec))).filter((c): c is CodecOptions => c !== undefined);
  if (ladder.length === 0) throw new RangeError(`chooseCodec: none of the allowed codecs (${[...allowed].join(', ')}) is on the ladder`);

  if (speed === null) {
    // int8 when allowed; otherwise the weakest allowed codec at least as strong as int8, else the strongest.
    const int8Rung = CODEC_LADDER.findIndex((rung) => rung.some((c) => c.codec === UNKNOWN_LINK_CODEC.codec));
    const fallback = allowed.has(UNKNOWN_LINK_CODEC.codec)
      ? UNKNOWN_LINK_CODEC
      : CODEC_LADDER.slice(int8Rung).map((rung) => rung.find((c) => allowed.has(c.codec))).find((c) => c !== undefined) ?? ladder[ladder.length - 1];
    return decision(fallback, `${unknownWhy}: safe default ${codecLabel(fallback)}`);
  }

  for (const c of ladder) {
    const d = decision(c, '');
    if (d.expectedSeconds! <= budget) {
      d.reason = `${codecLabel(c)} is the least lossy that fits: ${KB(d.expectedBytes)} at ${KB(speed)}/s takes ${secs(d.expectedSeconds!)} of a ${secs(budget)} budget`;
      return d;
    }
  }
  const strongest = decision(ladder[ladder.length - 1], '');
  strongest.reason = `nothing fits a ${secs(budget)} budget at ${KB(speed)}/s: strongest ${codecLabel(strongest.codec)} (${KB(strongest.expectedBytes)}, ${secs(strongest.expectedSeconds!)})`;
  return strongest;
}
