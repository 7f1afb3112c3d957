/**
 * The codec facade: option validation (the user-facing TypeError/RangeError, thrown before any
 * work), the two backends behind one interface, and the choice between them.
 */
import { logger } from '../log';
import {
  CODECS, CodecId, CorruptPayloadError, readHeader, sparse, type CodecName, type Params,
} from './format';
import { loadNative } from './native';
import { typescriptBackend, type RawBackend } from './ts-codec';

export interface CodecOptions {
  codec: CodecName;
  /** Elements per absmax scale for int8/int4/topk-int8. Integer >= 1; default 256. */
  blockSize?: number;
  /** Stochastic (unbiased) rounding instead of round-half-to-even. Default false. */
  stochastic?: boolean;
  /** Noise seed for stochastic rounding, integer 0..2^32-1; default 0. Vary it per round. */
  seed?: number;
  /** Fraction of elements kept by topk/topk-int8, in (0, 1]; default 0.01. */
  k?: number;
}

/** Results always own a plain (non-shared) ArrayBuffer. */
export type Bytes = Uint8Array<ArrayBuffer>;
export type Floats = Float32Array<ArrayBuffer>;

export interface Codec {
  readonly backend: 'native' | 'typescript';
  encode(x: Float32Array, opts: CodecOptions): Bytes;
  /** Above ASYNC_THRESHOLD elements the native backend encodes on the libuv pool. */
  encodeAsync(x: Float32Array, opts: CodecOptions): Promise<Bytes>;
  /** Throws CorruptPayloadError on a truncated or corrupted payload. */
  decode(bytes: Uint8Array): Floats;
}

export const DEFAULT_BLOCK_SIZE = 256;
export const DEFAULT_K = 0.01;
export const ASYNC_THRESHOLD = 1 << 20;

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object';
  return typeof v;
}

function option(o: Record<string, unknown>, key: string, type: 'number' | 'boolean'): unknown {
  const v = o[key];
  if (v !== undefined && typeof v !== type) throw new TypeError(`opts.${key} must be a ${type}, got ${typeName(v)}`);
  return v;
}

/** Validates everything up front and derives the encoder's parameters. */
export function normalize(x: unknown, opts: unknown): Params {
  if (!(x instanceof Float32Array)) throw new TypeError(`x must be a Float32Array, got ${typeName(x)}`);
  if (typeof opts !== 'object' || opts === null) throw new TypeError(`opts must be an object like { codec: 'int8' }, got ${typeName(opts)}`);
  const o = opts as Record<string, unknown>;
  if (typeof o.codec !== 'string') throw new TypeError(`opts.codec must be a string (${CODECS.join(', ')}), got ${typeName(o.codec)}`);
  const codec = CODECS.indexOf(o.codec as CodecName) as CodecId;
  if (codec < 0) throw new RangeError(`opts.codec '${o.codec}' is not one of ${CODECS.join(', ')}`);
  const blockSize = (option(o, 'blockSize', 'number') as number | undefined) ?? DEFAULT_BLOCK_SIZE;
  if (!Number.isInteger(blockSize) || blockSize < 1 || blockSize > 0xffffffff) {
    throw new RangeError(`opts.blockSize must be an integer in 1..2^32-1, got ${blockSize}`);
  }
  const stochastic = (option(o, 'stochastic', 'boolean') as boolean | undefined) ?? false;
  const seed = (option(o, 'seed', 'number') as number | undefined) ?? 0;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`opts.seed must be an integer in 0..2^32-1, got ${seed}`);
  const k = (option(o, 'k', 'number') as number | undefined) ?? DEFAULT_K;
  if (!(k > 0 && k <= 1)) throw new RangeError(`opts.k must be a fraction in (0, 1], got ${k}`);
  const n = x.length;
  if (n > 0xffffffff) throw new RangeError(`x has ${n} elements; the format holds at most 2^32-1`);
  const kept = sparse(codec) && n > 0 ? Math.min(n, Math.max(1, Math.round(k * n))) : 0;
  const quantizing = codec === CodecId.Int8 || codec === CodecId.Int4 || codec === CodecId.TopkInt8;
  return { codec, n, blockSize: quantizing ? blockSize : 0, k: kept, stochastic: quantizing && stochastic, seed };
}

/** Addon results are Buffers; hand out plain Uint8Arrays from both backends. */
function plain(b: Uint8Array): Bytes {
  const buf = b.buffer as ArrayBuffer;
  return Object.getPrototypeOf(b) === Uint8Array.prototype ? (b as Bytes) : new Uint8Array(buf, b.byteOffset, b.byteLength);
}

export function codecOf(bytes: Uint8Array): CodecName {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`bytes must be a Uint8Array, got ${typeName(bytes)}`);
  return CODECS[readHeader(bytes).codec];
}

export function makeCodec(raw: RawBackend, backend: 'native' | 'typescript'): Codec {
  return {
    backend,
    encode: (x, opts) => plain(raw.encode(x, normalize(x, opts))),
    async encodeAsync(x, opts) {
      const p = normalize(x, opts);
      if (raw.encodeAsync && p.n >= ASYNC_THRESHOLD) return plain(await raw.encodeAsync(x, p));
      return plain(raw.encode(x, p));
    },
    decode(bytes) {
      if (!(bytes instanceof Uint8Array)) throw new TypeError(`bytes must be a Uint8Array, got ${typeName(bytes)}`);
      try {
        return raw.decode(bytes) as Floats;
      } catch (err) {
        if (!(err instanceof CorruptPayloadError) && /^corrupt payload: /.test((err as Error)?.message)) {
          throw new CorruptPayloadError((err as Error).message);
        }
        throw err;
      }
    },
  };
}

export const typescriptCodec: Codec = makeCodec(typescriptBackend, 'typescript');

function choose(): { native?: Codec; active: Codec; reason: string } {
  const want = process.env.FEDGATE_COMPRESS_BACKEND ?? '';
  const loaded = loadNative();
  const native = loaded.backend && makeCodec(loaded.backend, 'native');
  if (want === 'typescript') return { native, active: typescriptCodec, reason: 'FEDGATE_COMPRESS_BACKEND=typescript' };
  if (native) return { native, active: native, reason: loaded.reason };
  if (want === 'native') throw new Error(`FEDGATE_COMPRESS_BACKEND=native but ${loaded.reason}`);
  return { active: typescriptCodec, reason: `TypeScript fallback: ${loaded.reason}` };
}

const chosen = choose();
/** The addon-backed codec, or undefined when the addon is not built or does not load. */
export const nativeCodec: Codec | undefined = chosen.native;
export const active: Codec = chosen.active;
export const backend: 'native' | 'typescript' = active.backend;
export const backendReason: string = chosen.reason;

{
  const log = logger('compress');
  const forced = process.env.FEDGATE_COMPRESS_BACKEND === 'typescript';
  if (backend === 'native' || forced) log.info({ backend, reason: backendReason }, `compression backend: ${backend}`);
  else log.warn({ backend, reason: backendReason }, 'compression backend: typescript fallback (slower; same bytes)');
}
