import { crc32 } from 'node:zlib';

/**
 * Binary wire frames for tensors: a fixed 32-byte header, a small JSON metadata block, then raw
 * bytes. Never JSON arrays of floats. Large payloads are split over several frames (chunks) that a
 * Reassembler puts back together; every frame carries a CRC-32 of itself and of the whole payload.
 *
 *   off size field
 *    0   4  magic "FGF1"
 *    4   1  format version (1)
 *    5   1  kind (1 = task with its model, 2 = update, 3 = task failed: metadata only, no payload)
 *    6   2  metadata length, bytes (u16 LE)
 *    8   4  transfer id (u32 LE), the same in every chunk of one payload
 *   12   4  total payload length (u32 LE)
 *   16   4  offset of this chunk in the payload (u32 LE)
 *   20   2  chunk index (u16 LE)
 *   22   2  chunk count (u16 LE)
 *   24   4  CRC-32 of the whole payload (u32 LE)
 *   28   4  CRC-32 of this frame with these four bytes zeroed (u32 LE)
 *   32   m  metadata, UTF-8 JSON object
 * 32+m   n  chunk bytes
 */
export const FRAME_MAGIC = 0x31464746; // "FGF1" read as u32 LE
export const FRAME_VERSION = 1;
export const FRAME_HEADER_BYTES = 32;
export const MAX_CHUNKS = 0xffff;

/**
 * Task: aggregator -> node on `node/<id>/task`. Update and TaskFailed: node -> aggregator on
 * `node/<id>/update`; TaskFailed carries a TaskFailure (messages.ts) as metadata and an empty payload.
 */
export enum FrameKind { Task = 1, Update = 2, TaskFailed = 3 }

export type FrameMeta = Record<string, unknown>;

export interface Frame {
  kind: FrameKind;
  meta: FrameMeta;
  transferId: number;
  totalLength: number;
  offset: number;
  index: number;
  count: number;
  payloadCrc: number;
  chunk: Uint8Array;
}

export class FrameError extends Error {
  override name = 'FrameError';
}

/** Splits `payload` into frames of at most `maxFrameBytes` bytes each (header and metadata included). */
export function encodeFrames(kind: FrameKind, meta: FrameMeta, payload: Uint8Array, maxFrameBytes: number, transferId = randomTransferId()): Buffer[] {
  const metaBytes = Buffer.from(JSON.stringify(meta), 'utf8');
  if (metaBytes.length > 0xffff) throw new FrameError(`frame metadata is ${metaBytes.length} bytes; at most 65535 fit`);
  const room = maxFrameBytes - FRAME_HEADER_BYTES - metaBytes.length;
  if (room < 1) throw new FrameError(`a frame limit of ${maxFrameBytes} bytes leaves no room for data after the ${FRAME_HEADER_BYTES + metaBytes.length}-byte header`);
  const count = Math.max(1, Math.ceil(payload.length / room));
  if (count > MAX_CHUNKS) throw new FrameError(`a ${payload.length}-byte payload needs ${count} chunks at ${maxFrameBytes} bytes a frame; at most ${MAX_CHUNKS} are allowed`);
  if (payload.length > 0xffffffff) throw new FrameError('payloads of 4 GiB or more cannot be framed');
  const payloadCrc = crc32(payload);
  const frames: Buffer[] = [];
  for (let index = 0; index < count; index++) {
    const offset = index * room;
    const chunk = payload.subarray(offset, Math.min(payload.length, offset + room));
    const buf = Buffer.allocUnsafe(FRAME_HEADER_BYTES + metaBytes.length + chunk.length);
    buf.writeUInt32LE(FRAME_MAGIC, 0);
    buf.writeUInt8(FRAME_VERSION, 4);
    buf.writeUInt8(kind, 5);
    buf.writeUInt16LE(metaBytes.length, 6);
    buf.writeUInt32LE(transferId >>> 0, 8);
    buf.writeUInt32LE(payload.length, 12);
    buf.writeUInt32LE(offset, 16);
    buf.writeUInt16LE(index, 20);
    buf.writeUInt16LE(count, 22);
    buf.writeUInt32LE(payloadCrc, 24);
    buf.writeUInt32LE(0, 28);
    metaBytes.copy(buf, FRAME_HEADER_BYTES);
    buf.set(chunk, FRAME_HEADER_BYTES + metaBytes.length);
    buf.writeUInt32LE(crc32(buf), 28);
    frames.push(buf);
  }
  return frames;
}

/** Parses and checks one frame; throws FrameError naming what is wrong. */
export function decodeFrame(data: Uint8Array): Frame {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (buf.length < FRAME_HEADER_BYTES) throw new FrameError(`frame is ${buf.length} bytes, shorter than its ${FRAME_HEADER_BYTES}-byte header`);
  if (buf.readUInt32LE(0) !== FRAME_MAGIC) throw new FrameError('not a fedgate frame (bad magic)');
  const version = buf.readUInt8(4);
  if (version !== FRAME_VERSION) throw new FrameError(`frame format version ${version} is not supported (this build reads ${FRAME_VERSION})`);
  const kind = buf.readUInt8(5);
  if (kind !== FrameKind.Task && kind !== FrameKind.Update && kind !== FrameKind.TaskFailed) throw new FrameError(`unknown frame kind ${kind}`);
  const metaLength = buf.readUInt16LE(6);
  if (FRAME_HEADER_BYTES + metaLength > buf.length) throw new FrameError('frame is truncated inside its metadata');
  const stored = buf.readUInt32LE(28);
  const copy = Buffer.from(buf);
  copy.writeUInt32LE(0, 28);
  if (crc32(copy) !== stored) throw new FrameError('frame checksum mismatch (corrupted in transit)');
  const totalLength = buf.readUInt32LE(12);
  const offset = buf.readUInt32LE(16);
  const index = buf.readUInt16LE(20);
  const count = buf.readUInt16LE(22);
  const chunk = buf.subarray(FRAME_HEADER_BYTES + metaLength);
  if (count === 0 || index >= count) throw new FrameError(`chunk index ${index} is out of range for ${count} chunks`);
  if (offset + chunk.length > totalLength) throw new FrameError(`chunk at offset ${offset} (+${chunk.length}) overruns the ${totalLength}-byte payload`);
  let meta: unknown;
  try {
    meta = JSON.parse(buf.toString('utf8', FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + metaLength));
  } catch (err) {
    throw new FrameError(`frame metadata is not valid JSON: ${(err as Error).message}`);
  }
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) throw new FrameError('frame metadata must be a JSON object');
  return { kind, meta: meta as FrameMeta, transferId: buf.readUInt32LE(8), totalLength, offset, index, count, payloadCrc: buf.readUInt32LE(24), chunk };
}

export interface Reassembled {
  kind: FrameKind;
  meta: FrameMeta;
  payload: Uint8Array;
  /** Bytes of all frames received for this payload, headers included (duplicates not counted). */
  wireBytes: number;
}

interface Pending {
  first: Frame;
  payload: Uint8Array;
  seen: Uint8Array;
  received: number;
  wireBytes: number;
  touched: number;
}

export interface ReassemblerOptions {
  /** Largest payload accepted, bytes. */
  maxPayloadBytes?: number;
  /** Partial payloads not completed within this time are dropped. */
  timeoutMs?: number;
  /** Most partial payloads held at once; the oldest is dropped beyond it. */
  maxPending?: number;
  now?: () => number;
}

/**
 * Collects chunks per (source, transfer id) and returns the payload once every chunk has arrived.
 * Duplicated chunks (brokers redeliver) are ignored; inconsistent ones throw.
 */
export class Reassembler {
  private readonly pending = new Map<string, Pending>();
  private readonly maxPayloadBytes: number;
  private readonly timeoutMs: number;
  private readonly maxPending: number;
  private readonly now: () => number;

  constructor(opts: ReassemblerOptions = {}) {
    this.maxPayloadBytes = opts.maxPayloadBytes ?? 256 * 1024 * 1024;
    this.timeoutMs = opts.timeoutMs ?? 120_000;
    this.maxPending = opts.maxPending ?? 256;
    this.now = opts.now ?? Date.now;
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  push(source: string, data: Uint8Array): Reassembled | undefined {
    const frame = decodeFrame(data);
    if (frame.totalLength > this.maxPayloadBytes) throw new FrameError(`payload of ${frame.totalLength} bytes exceeds the ${this.maxPayloadBytes}-byte limit`);
    this.expire();
    if (frame.count === 1) {
      if (frame.chunk.length !== frame.totalLength) throw new FrameError(`single-chunk frame holds ${frame.chunk.length} of ${frame.totalLength} bytes`);
      return this.finish(frame, new Uint8Array(frame.chunk), data.byteLength);
    }
    const key = `${source}\u0000${frame.transferId}`;
    let entry = this.pending.get(key);
    if (!entry) {
      if (this.pending.size >= this.maxPending) this.pending.delete(this.pending.keys().next().value as string);
      entry = { first: frame, payload: new Uint8Array(frame.totalLength), seen: new Uint8Array(frame.count), received: 0, wireBytes: 0, touched: this.now() };
      this.pending.set(key, entry);
    } else if (entry.first.count !== frame.count || entry.first.totalLength !== frame.totalLength || entry.first.payloadCrc !== frame.payloadCrc || entry.first.kind !== frame.kind) {
      this.pending.delete(key);
      throw new FrameError(`chunk ${frame.index} of transfer ${frame.transferId} from ${source} disagrees with the earlier chunks; transfer dropped`);
    }
    entry.touched = this.now();
    if (entry.seen[frame.index]) return undefined;
    entry.seen[frame.index] = 1;
    entry.received++;
    entry.wireBytes += data.byteLength;
    entry.payload.set(frame.chunk, frame.offset);
    if (entry.received < frame.count) return undefined;
    this.pending.delete(key);
    return this.finish(entry.first, entry.payload, entry.wireBytes);
  }

  private finish(frame: Frame, payload: Uint8Array, wireBytes: number): Reassembled {
    if (crc32(payload) !== frame.payloadCrc) throw new FrameError(`payload checksum mismatch for transfer ${frame.transferId}`);
    return { kind: frame.kind, meta: frame.meta, payload, wireBytes };
  }

  private expire(): void {
    const limit = this.now() - this.timeoutMs;
    for (const [key, entry] of this.pending) if (entry.touched < limit) this.pending.delete(key);
  }
}

export function randomTransferId(): number {
  return (Math.random() * 0x100000000) >>> 0;
}
