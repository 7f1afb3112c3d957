/**
 * Error feedback (EF-SGD): what compression drops this round is added back next round, so the sum
 * of decoded updates tracks the sum of true updates.
 *   corrected = update + residual            (compensate)
 *   residual  = corrected - decode(encoded)  (commit, with encoded = encode(corrected))
 * The residual survives restarts: save() writes it atomically with a CRC-32, load() checks the
 * checksum and that it fits the model, and check() that its values are sane next to the model.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { active, type Codec } from './codec';

// File (FORMAT.md): "FGEF", u32 version, u32 length, u32 word, then length little-endian float32.
// Version 2 (written): the word is the CRC-32 (zlib's, as the transport frames use) of the first
// 12 header bytes followed by the float32 payload. Version 1 (still read): the word is 0 and there
// is no checksum; such a file is checked for finite, sane values only, and rewritten as version 2
// at the next save.
const MAGIC = 0x46454746; // "FGEF" read as little-endian u32
const VERSION = 2;
const HEADER = 16;

/**
 * The most a residual value may be, relative to the model it corrects: RESIDUAL_BOUND_FACTOR ×
 * max(1, the model's largest |weight|). A residual is the part of past updates compression held
 * back, so honest values are of the order of one round's delta, far below the weights; one this far
 * beyond them would wreck the model it is added to (a corrupt file that still reads as floats).
 */
export const RESIDUAL_BOUND_FACTOR = 1000;

function fileCrc(buf: Uint8Array): number {
  return crc32(buf.subarray(HEADER), crc32(buf.subarray(0, 12)));
}

function checkVector(name: string, v: unknown, length: number): asserts v is Float32Array {
  if (!(v instanceof Float32Array)) throw new TypeError(`${name} must be a Float32Array`);
  if (v.length !== length) throw new RangeError(`${name} has ${v.length} elements, the residual has ${length}`);
}

export class ErrorFeedback {
  readonly residual: Float32Array<ArrayBuffer>;

  /** `codec` only chooses the decoder (tests pin a backend); both give the same floats. */
  constructor(length: number, private readonly codec: Pick<Codec, 'decode'> = active) {
    if (!Number.isInteger(length) || length < 0 || length > 0xffffffff) {
      throw new RangeError(`ErrorFeedback length must be an integer in 0..2^32-1, got ${length}`);
    }
    this.residual = new Float32Array(length);
  }

  /** update + residual, as a new array (the input is not modified). */
  compensate(update: Float32Array): Float32Array<ArrayBuffer> {
    checkVector('update', update, this.residual.length);
    const out = new Float32Array(update.length);
    for (let i = 0; i < out.length; i++) out[i] = update[i] + this.residual[i];
    return out;
  }

  /** Records what the encoding of `corrected` lost. Call once the payload is committed to be sent. */
  commit(corrected: Float32Array, encoded: Uint8Array): void {
    checkVector('corrected', corrected, this.residual.length);
    const decoded = this.codec.decode(encoded);
    checkVector('decoded payload', decoded, this.residual.length);
    for (let i = 0; i < decoded.length; i++) this.residual[i] = corrected[i] - decoded[i];
  }

  /**
   * Why this residual must not be added to an update of `model` (the global model the update starts
   * from), or undefined: a non-finite value, or one beyond RESIDUAL_BOUND_FACTOR × max(1, max |weight|).
   */
  check(model: Float32Array): string | undefined {
    checkVector('model', model, this.residual.length);
    let largest = 1;
    for (let i = 0; i < model.length; i++) {
      const a = Math.abs(model[i]);
      if (a > largest) largest = a; // a NaN weight is skipped, an infinite one lifts the bound: the model's fault, not the residual's
    }
    const bound = RESIDUAL_BOUND_FACTOR * largest;
    for (let i = 0; i < this.residual.length; i++) {
      const v = this.residual[i];
      if (!Number.isFinite(v)) return `value ${v} at index ${i} is not finite`;
      if (Math.abs(v) > bound) return `value ${v} at index ${i} is beyond ${bound} (${RESIDUAL_BOUND_FACTOR} × max(1, the model's largest |weight|))`;
    }
    return undefined;
  }

  /** Atomic: writes a temporary file in the same directory, fsyncs it, renames it over `file`. */
  async save(file: string): Promise<void> {
    const buf = Buffer.alloc(HEADER + 4 * this.residual.length);
    buf.writeUInt32LE(MAGIC, 0);
    buf.writeUInt32LE(VERSION, 4);
    buf.writeUInt32LE(this.residual.length, 8);
    Buffer.from(this.residual.buffer, this.residual.byteOffset, this.residual.byteLength).copy(buf, HEADER);
    buf.writeUInt32LE(fileCrc(buf), 12);
    const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    const fh = await fsp.open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(buf);
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await fsp.rename(tmp, file);
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw err;
    }
    // Make the rename itself durable (power loss on a gateway); not every platform can fsync a dir.
    const dir = await fsp.open(path.dirname(file), 'r').catch(() => undefined);
    await dir?.sync().catch(() => undefined);
    await dir?.close();
  }

  /**
   * Restores a residual saved by save() (version 2, or an older release's version 1); throws if it
   * is not one, fails its checksum, holds a non-finite value or was saved for another length.
   */
  static async load(file: string, length: number, codec?: Pick<Codec, 'decode'>): Promise<ErrorFeedback> {
    const ef = new ErrorFeedback(length, codec);
    const buf = await fsp.readFile(file);
    const bad = (why: string) => new Error(`${file}: not a usable error-feedback residual: ${why}`);
    if (buf.length < HEADER || buf.readUInt32LE(0) !== MAGIC) throw bad('bad magic');
    const version = buf.readUInt32LE(4);
    if (version !== VERSION && version !== 1) throw bad(`unsupported version ${version}`);
    const saved = buf.readUInt32LE(8);
    if (saved !== length) throw new RangeError(`${file}: residual has ${saved} elements, the model has ${length}`);
    if (buf.length !== HEADER + 4 * length) throw bad(`${buf.length} bytes, expected ${HEADER + 4 * length} (truncated?)`);
    if (version === VERSION) {
      const stored = buf.readUInt32LE(12);
      const actual = fileCrc(buf);
      if (stored !== actual) throw bad(`checksum mismatch (stored ${hex32(stored)}, computed ${hex32(actual)}): the file is corrupt`);
    }
    new Uint8Array(ef.residual.buffer).set(buf.subarray(HEADER));
    if (!ef.residual.every(Number.isFinite)) throw bad('holds a non-finite value');
    return ef;
  }
}

function hex32(v: number): string {
  return `0x${v.toString(16).padStart(8, '0')}`;
}
