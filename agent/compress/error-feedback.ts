/**
 * Error feedback (EF-SGD): what compression drops this round is added back next round, so the sum
 * of decoded updates tracks the sum of true updates.
 *   corrected = update + residual            (compensate)
 *   residual  = corrected - decode(encoded)  (commit, with encoded = encode(corrected))
 * The residual survives restarts: save() writes it atomically, load() checks it fits the model.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { active, type Codec } from './codec';

// File: "FGEF", u32 version 1, u32 length, u32 reserved 0, then length little-endian float32.
const MAGIC = 0x46454746; // "FGEF" read as little-endian u32
const VERSION = 1;
const HEADER = 16;

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

  /** Atomic: writes a temporary file in the same directory, fsyncs it, renames it over `file`. */
  async save(file: string): Promise<void> {
    const buf = Buffer.alloc(HEADER + 4 * this.residual.length);
    buf.writeUInt32LE(MAGIC, 0);
    buf.writeUInt32LE(VERSION, 4);
    buf.writeUInt32LE(this.residual.length, 8);
    Buffer.from(this.residual.buffer, this.residual.byteOffset, this.residual.byteLength).copy(buf, HEADER);
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

  /** Restores a residual saved by save(); throws if it is not one or was saved for another length. */
  static async load(file: string, length: number, codec?: Pick<Codec, 'decode'>): Promise<ErrorFeedback> {
    const ef = new ErrorFeedback(length, codec);
    const buf = await fsp.readFile(file);
    const bad = (why: string) => new Error(`${file}: not a usable error-feedback residual: ${why}`);
    if (buf.length < HEADER || buf.readUInt32LE(0) !== MAGIC) throw bad('bad magic');
    if (buf.readUInt32LE(4) !== VERSION) throw bad(`unsupported version ${buf.readUInt32LE(4)}`);
    const saved = buf.readUInt32LE(8);
    if (saved !== length) throw new RangeError(`${file}: residual has ${saved} elements, the model has ${length}`);
    if (buf.length !== HEADER + 4 * length) throw bad(`${buf.length} bytes, expected ${HEADER + 4 * length} (truncated?)`);
    new Uint8Array(ef.residual.buffer).set(buf.subarray(HEADER));
    if (!ef.residual.every(Number.isFinite)) throw bad('holds a non-finite value');
    return ef;
  }
}
