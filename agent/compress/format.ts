/**
 * The self-describing encoded format (FORMAT.md), shared by both backends and by codecOf().
 * native/compress.cc has the same constants and checks; keep them in step.
 */

export type CodecName = 'none' | 'int8' | 'int4' | 'topk' | 'topk-int8';

export const CODECS: readonly CodecName[] = ['none', 'int8', 'int4', 'topk', 'topk-int8'];
export const MAGIC = [0x46, 0x47, 0x43, 0x5a] as const; // "FGCZ"
/**
 * The newest format version, the one the native addon must speak. Version 2 changed only the
 * top-k layouts (indices as LEB128 gaps after the values): dense codecs are still written as
 * version 1, byte for byte what older decoders read. Decoders read both.
 */
export const FORMAT_VERSION = 2;
export const DENSE_VERSION = 1;
export const HEADER_BYTES = 20;
export const FLAG_STOCHASTIC = 1;

export enum CodecId { None = 0, Int8 = 1, Int4 = 2, Topk = 3, TopkInt8 = 4 }

/** Everything an encoder needs, validated and normalized by the facade (index.ts). */
export interface Params {
  codec: CodecId;
  n: number; // element count
  blockSize: number; // quantizing codecs, else 0
  k: number; // kept elements for top-k codecs, else 0
  stochastic: boolean; // quantizing codecs
  seed: number; // uint32
}

/** A payload that is not a valid fedgate encoding (truncated, corrupted, or something else). */
export class CorruptPayloadError extends Error {
  readonly code = 'ERR_FEDGATE_COMPRESS_CORRUPT';
  constructor(reason: string) {
    super(reason.startsWith('corrupt payload: ') ? reason : `corrupt payload: ${reason}`);
    this.name = 'CorruptPayloadError';
  }
}

export const quantizes = (c: CodecId): boolean => c === CodecId.Int8 || c === CodecId.Int4 || c === CodecId.TopkInt8;
export const sparse = (c: CodecId): boolean => c === CodecId.Topk || c === CodecId.TopkInt8;
export const blocks = (count: number, bs: number): number => (bs ? Math.ceil(count / bs) : 0);

export const versionFor = (c: CodecId): number => (sparse(c) ? FORMAT_VERSION : DENSE_VERSION);

type Shape = Pick<Params, 'codec' | 'n' | 'blockSize' | 'k'>;

/** Bytes of the kept values of a top-k payload: f32[k], or scales f32[kb] + q i8[k]. */
export const sparseValueBytes = (p: Shape): number => (p.codec === CodecId.Topk ? 4 * p.k : 4 * blocks(p.k, p.blockSize) + p.k);

/**
 * The payload size of a dense codec; for top-k, everything but the index stream (version 2) or
 * the whole payload with absolute u32 indices (version 1).
 */
export function fixedSize(p: Shape, version = versionFor(p.codec)): number {
  switch (p.codec) {
    case CodecId.None: return HEADER_BYTES + 4 * p.n;
    case CodecId.Int8: return HEADER_BYTES + 4 * blocks(p.n, p.blockSize) + p.n;
    case CodecId.Int4: return HEADER_BYTES + 4 * blocks(p.n, p.blockSize) + Math.ceil(p.n / 2);
    case CodecId.Topk:
    case CodecId.TopkInt8: return HEADER_BYTES + sparseValueBytes(p) + (version === 1 ? 4 * p.k : 0);
  }
}

/** LEB128 length of an unsigned 32-bit value. */
export const varintBytes = (v: number): number => (v < 2 ** 7 ? 1 : v < 2 ** 14 ? 2 : v < 2 ** 21 ? 3 : v < 2 ** 28 ? 4 : 5);

/** Bytes of the index stream of ascending indices: the first index, then each gap minus one. */
export function indexStreamBytes(idx: ArrayLike<number>): number {
  let total = 0;
  for (let j = 0; j < idx.length; j++) total += varintBytes(j ? idx[j] - idx[j - 1] - 1 : idx[0]);
  return total;
}

/**
 * The most bytes the index stream of k ascending indices below n can take. The gaps sum to at most
 * n - k, and one more byte for a gap costs 128, then 16,256, ... more: filling the cheapest step
 * first is optimal. The decoders refuse a longer payload; the codec chooser plans with it.
 */
export function maxIndexBytes(n: number, k: number): number {
  let bytes = k;
  let budget = n - k;
  let count = k;
  let prev = 0;
  for (const t of [2 ** 7, 2 ** 14, 2 ** 21, 2 ** 28]) {
    count = Math.min(count, Math.floor(budget / (t - prev)));
    budget -= count * (t - prev);
    bytes += count;
    prev = t;
  }
  return bytes;
}

/**
 * Exact payload size of a dense codec. For top-k the size depends on where the kept values are:
 * pass the index stream's bytes, or leave them out for the largest size possible.
 */
export function encodedSize(p: Shape, indexBytes?: number): number {
  if (!sparse(p.codec)) return fixedSize(p);
  return fixedSize(p) + (indexBytes ?? maxIndexBytes(p.n, p.k));
}

export function writeHeader(out: Uint8Array, p: Params): void {
  const dv = new DataView(out.buffer, out.byteOffset, HEADER_BYTES);
  out.set(MAGIC, 0);
  out[4] = versionFor(p.codec);
  out[5] = p.codec;
  out[6] = quantizes(p.codec) && p.stochastic ? FLAG_STOCHASTIC : 0;
  out[7] = 0;
  dv.setUint32(8, p.n, true);
  dv.setUint32(12, quantizes(p.codec) ? p.blockSize : 0, true);
  dv.setUint32(16, sparse(p.codec) ? p.k : 0, true);
}

/**
 * Parses and checks the header, including that the payload has exactly the length it announces.
 * Throws CorruptPayloadError with the same reason text as the native decoder.
 */
export function readHeader(b: Uint8Array): Omit<Params, 'seed'> & { version: number } {
  if (b.length < HEADER_BYTES) throw new CorruptPayloadError(`payload too short for a header (${b.length} < 20 bytes)`);
  if (MAGIC.some((m, i) => b[i] !== m)) throw new CorruptPayloadError('bad magic (not a fedgate compressed payload)');
  if (b[4] !== 1 && b[4] !== 2) throw new CorruptPayloadError(`unsupported format version ${b[4]}`);
  if (b[5] > CodecId.TopkInt8) throw new CorruptPayloadError(`unknown codec id ${b[5]}`);
  const codec = b[5] as CodecId;
  const version = b[4];
  if (version === 2 && !sparse(codec)) throw new CorruptPayloadError(`format version 2 is for top-k codecs only, not ${CODECS[codec]}`);
  if (b[6] & ~(quantizes(codec) ? FLAG_STOCHASTIC : 0)) throw new CorruptPayloadError(`unknown flags ${b[6]}`);
  if (b[7] !== 0) throw new CorruptPayloadError(`reserved byte is ${b[7]}, not 0`);
  const dv = new DataView(b.buffer, b.byteOffset, HEADER_BYTES);
  const n = dv.getUint32(8, true);
  const blockSize = dv.getUint32(12, true);
  const k = dv.getUint32(16, true);
  const name = CODECS[codec];
  if (quantizes(codec) ? blockSize === 0 : blockSize !== 0) throw new CorruptPayloadError(`block size ${blockSize} is invalid for ${name}`);
  if (sparse(codec) ? k > n || (k === 0 && n > 0) : k !== 0) throw new CorruptPayloadError(`k ${k} is invalid for ${name} with n ${n}`);
  const want = fixedSize({ codec, n, blockSize, k }, version);
  if (sparse(codec) && version === 2) {
    // Each index takes 1 to 5 bytes; the decoder checks that the stream fills the rest exactly.
    const lo = want + k;
    const hi = want + maxIndexBytes(n, k);
    if (b.length < lo || b.length > hi) throw new CorruptPayloadError(`length is ${b.length} bytes, ${name} with n ${n} and k ${k} needs ${lo}..${hi} (truncated or padded)`);
  } else if (b.length !== want) {
    throw new CorruptPayloadError(`length is ${b.length} bytes, ${name} with n ${n} needs ${want} (truncated or padded)`);
  }
  return { codec, n, blockSize, k, stochastic: (b[6] & FLAG_STOCHASTIC) !== 0, version };
}
