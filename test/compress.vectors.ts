/**
 * Shared test vectors for the gradient-compression codecs. Every backend must pass all of them;
 * the native and TypeScript backends must also agree byte for byte (compress.test.ts).
 */
import type { CodecOptions } from '../agent/compress';

/** Deterministic gradient-like data: mulberry32 -> roughly N(0, scale), every 97th value x40. */
export function gradient(n: number, seed: number, scale = 1e-2): Float32Array {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const g = (next() + next() + next() + next() - 2) * 1.7;
    x[i] = g * scale * (i % 97 === 5 ? 40 : 1);
  }
  return x;
}

export const LENGTHS = [1, 2, 3, 7, 255, 256, 257, 1000, 4097];
export const BLOCK_SIZES = [1, 3, 64, 256];
export const SEEDS = [0, 1, 0xdeadbeef];

/** Frozen encodings of one small input: the format must not drift. */
export const GOLDEN_INPUT = [0.5, -1, 0.25, 0, 3, -0.1, 7.5];
export const GOLDEN: { opts: CodecOptions; hex: string }[] = [
  { opts: { codec: 'none' }, hex: '4647435a010000000700000000000000000000000000003f000080bf0000803e0000000000004040cdccccbd0000f040' },
  { opts: { codec: 'int8', blockSize: 4 }, hex: '4647435a010100000700000004000000000000000502013cc8e3713d3f81200033fe7f' },
  { opts: { codec: 'int4', blockSize: 4 }, hex: '4647435a010200000700000004000000000000002549123e9324893f93020307' },
  { opts: { codec: 'int8', blockSize: 4, stochastic: true, seed: 7 }, hex: '4647435a010101000700000004000000000000000502013cc8e3713d4081200033ff7f' },
  { opts: { codec: 'int4', blockSize: 3, stochastic: true, seed: 7 }, hex: '4647435a010201000700000003000000000000002549123eb76ddb3e9324893f94020707' },
  // Version 2: the kept values (0.5, -1, 3, 7.5 at 0, 1, 4, 6), then the index stream 00 00 02 01
  // (the first index, then each gap minus one, LEB128).
  { opts: { codec: 'topk', k: 0.5 }, hex: '4647435a020300000700000000000000040000000000003f000080bf000040400000f04000000201' },
  { opts: { codec: 'topk-int8', k: 0.5, blockSize: 2 }, hex: '4647435a020400000700000002000000040000000502013cc8e3713d3f81337f00000201' },
];

/** Version 1 top-k payloads (absolute u32 indices before the values), as agents before version 2 sent them: still decoded. */
export const GOLDEN_V1: { codec: CodecOptions['codec']; hex: string; decoded: number[] }[] = [
  { codec: 'topk', hex: '4647435a01030000070000000000000004000000000000000100000004000000060000000000003f000080bf000040400000f040', decoded: [0.5, -1, 0, 0, 3, 0, 7.5] },
  { codec: 'topk-int8', hex: '4647435a01040000070000000200000004000000000000000100000004000000060000000502013cc8e3713d3f81337f', decoded: [Math.fround(0.4960630536079407), Math.fround(-1.0000001192092896), 0, 0, Math.fround(3.0118110179901123), 0, 7.5] },
];

/** Options that must be refused before any work, with the error class and message. */
export const BAD_OPTIONS: { name: string; opts: unknown; error: typeof TypeError | typeof RangeError; message: RegExp }[] = [
  { name: 'no options', opts: undefined, error: TypeError, message: /opts must be an object/ },
  { name: 'codec missing', opts: {}, error: TypeError, message: /opts.codec must be a string/ },
  { name: 'codec of wrong type', opts: { codec: 8 }, error: TypeError, message: /opts.codec must be a string/ },
  { name: 'unknown codec (int3 bits)', opts: { codec: 'int3' }, error: RangeError, message: /opts.codec 'int3' is not one of/ },
  { name: 'block size 0', opts: { codec: 'int8', blockSize: 0 }, error: RangeError, message: /opts.blockSize must be an integer/ },
  { name: 'block size not an integer', opts: { codec: 'int4', blockSize: 2.5 }, error: RangeError, message: /opts.blockSize must be an integer/ },
  { name: 'block size NaN', opts: { codec: 'int8', blockSize: NaN }, error: RangeError, message: /opts.blockSize/ },
  { name: 'block size of wrong type', opts: { codec: 'int8', blockSize: '256' }, error: TypeError, message: /opts.blockSize must be a number, got string/ },
  { name: 'k = 0', opts: { codec: 'topk', k: 0 }, error: RangeError, message: /opts.k must be a fraction in \(0, 1\]/ },
  { name: 'k > 1', opts: { codec: 'topk', k: 1.5 }, error: RangeError, message: /opts.k/ },
  { name: 'k negative', opts: { codec: 'topk-int8', k: -0.1 }, error: RangeError, message: /opts.k/ },
  { name: 'k NaN', opts: { codec: 'topk', k: NaN }, error: RangeError, message: /opts.k/ },
  { name: 'k of wrong type', opts: { codec: 'topk', k: '1%' }, error: TypeError, message: /opts.k must be a number/ },
  { name: 'stochastic of wrong type', opts: { codec: 'int8', stochastic: 'yes' }, error: TypeError, message: /opts.stochastic must be a boolean/ },
  { name: 'seed negative', opts: { codec: 'int8', stochastic: true, seed: -1 }, error: RangeError, message: /opts.seed must be an integer in 0..2\^32-1/ },
  { name: 'seed too big', opts: { codec: 'int8', stochastic: true, seed: 2 ** 32 }, error: RangeError, message: /opts.seed/ },
  { name: 'seed not an integer', opts: { codec: 'int8', stochastic: true, seed: 0.5 }, error: RangeError, message: /opts.seed/ },
];

/** Inputs that are not Float32Arrays. */
export const BAD_INPUTS: { name: string; x: unknown }[] = [
  { name: 'Float64Array', x: new Float64Array(4) },
  { name: 'plain array', x: [1, 2, 3] },
  { name: 'null', x: null },
  { name: 'Uint8Array', x: new Uint8Array(4) },
];

/** Non-finite values: the message names the first offending index. */
export const NON_FINITE: { name: string; x: Float32Array; message: RegExp }[] = [
  { name: 'NaN', x: Float32Array.from([0, 1, 2, 3, 4, NaN, 1]), message: /^input\[5\] is NaN: compress input must be finite$/ },
  { name: 'Infinity', x: Float32Array.from([Infinity]), message: /^input\[0\] is Infinity/ },
  { name: '-Infinity late', x: (() => { const x = gradient(4097, 3); x[4096] = -Infinity; return x; })(), message: /^input\[4096\] is -Infinity/ },
  { name: 'NaN and Inf', x: Float32Array.from([1, Infinity, NaN]), message: /^input\[1\] is Infinity/ },
];

/** Corruptions of a valid payload and the reason the decoder must give (same in both backends). */
export interface Corruption { name: string; opts: CodecOptions; n: number; mutate(b: Uint8Array): Uint8Array; message: RegExp }
const poke = (at: number, v: number) => (b: Uint8Array) => { const c = b.slice(); c[at < 0 ? c.length + at : at] = v; return c; };
const u32 = (at: number, v: number) => (b: Uint8Array) => { const c = b.slice(); new DataView(c.buffer).setUint32(at, v, true); return c; };
export const CORRUPTIONS: Corruption[] = [
  { name: 'empty', opts: { codec: 'int8' }, n: 10, mutate: () => new Uint8Array(0), message: /payload too short for a header \(0 < 20 bytes\)/ },
  { name: 'header cut', opts: { codec: 'int8' }, n: 10, mutate: (b) => b.slice(0, 19), message: /payload too short for a header \(19 < 20 bytes\)/ },
  { name: 'bad magic', opts: { codec: 'int8' }, n: 10, mutate: poke(0, 0x00), message: /bad magic/ },
  { name: 'future version', opts: { codec: 'int8' }, n: 10, mutate: poke(4, 3), message: /unsupported format version 3/ },
  { name: 'version 2 on a dense codec', opts: { codec: 'int8' }, n: 10, mutate: poke(4, 2), message: /format version 2 is for top-k codecs only, not int8/ },
  { name: 'version 0', opts: { codec: 'topk' }, n: 10, mutate: poke(4, 0), message: /unsupported format version 0/ },
  { name: 'unknown codec', opts: { codec: 'int8' }, n: 10, mutate: poke(5, 9), message: /unknown codec id 9/ },
  { name: 'unknown flag', opts: { codec: 'int8' }, n: 10, mutate: poke(6, 0x82), message: /unknown flags 130/ },
  { name: 'stochastic flag on topk', opts: { codec: 'topk' }, n: 10, mutate: poke(6, 1), message: /unknown flags 1/ },
  { name: 'reserved byte', opts: { codec: 'int4' }, n: 10, mutate: poke(7, 1), message: /reserved byte is 1, not 0/ },
  { name: 'truncated body', opts: { codec: 'int8', blockSize: 4 }, n: 10, mutate: (b) => b.slice(0, b.length - 1), message: /length is 41 bytes, int8 with n 10 needs 42 \(truncated or padded\)/ },
  { name: 'padded body', opts: { codec: 'int4' }, n: 9, mutate: (b) => Uint8Array.from([...b, 0]), message: /length is 30 bytes, int4 with n 9 needs 29/ },
  { name: 'count inflated', opts: { codec: 'int8' }, n: 10, mutate: u32(8, 11), message: /length is 34 bytes, int8 with n 11 needs 35/ },
  { name: 'huge count', opts: { codec: 'none' }, n: 10, mutate: u32(8, 0xffffffff), message: /needs 17179869200/ },
  { name: 'block size 0', opts: { codec: 'int8' }, n: 10, mutate: u32(12, 0), message: /block size 0 is invalid for int8/ },
  { name: 'block size on none', opts: { codec: 'none' }, n: 10, mutate: u32(12, 4), message: /block size 4 is invalid for none/ },
  { name: 'k above n', opts: { codec: 'topk', k: 0.5 }, n: 10, mutate: u32(16, 11), message: /k 11 is invalid for topk with n 10/ },
  { name: 'k on int8', opts: { codec: 'int8' }, n: 10, mutate: u32(16, 1), message: /k 1 is invalid for int8 with n 10/ },
  { name: 'NaN scale', opts: { codec: 'int8', blockSize: 4 }, n: 10, mutate: u32(24, 0x7fc00000), message: /scale of block 1 is not a finite number >= 0/ },
  { name: 'negative scale', opts: { codec: 'int4', blockSize: 4 }, n: 10, mutate: u32(20, 0xbf800000), message: /scale of block 0 is not a finite number >= 0/ },
  { name: 'int8 -128', opts: { codec: 'int8', blockSize: 4 }, n: 10, mutate: poke(-1, 0x80), message: /int8 value -128 in block 2 \(range is -127..127\)/ },
  { name: 'int4 -8', opts: { codec: 'int4', blockSize: 4 }, n: 10, mutate: poke(-1, 0x08), message: /int4 value -8 in block 2 \(range is -7..7\)/ },
  { name: 'int4 padding', opts: { codec: 'int4', blockSize: 4 }, n: 9, mutate: (b) => { const c = b.slice(); c[c.length - 1] |= 0x10; return c; }, message: /int4 padding nibble is not 0/ },
  // topk n 10, k 3: values at 20..31, then three 1-byte gaps at 32..34.
  { name: 'topk index out of range', opts: { codec: 'topk', k: 0.3 }, n: 10, mutate: poke(32, 10), message: /index 10 at position 0 is out of order or out of range/ },
  { name: 'topk NaN value', opts: { codec: 'topk', k: 0.3 }, n: 10, mutate: u32(24, 0x7fc00000), message: /value is not finite/ },
  { name: 'topk stream cut', opts: { codec: 'topk', k: 0.3 }, n: 10, mutate: (b) => b.slice(0, -1), message: /length is 34 bytes, topk with n 10 and k 3 needs 35..35 \(truncated or padded\)/ },
  // topk n 1000, k 10: 40 bytes of values at 20..59, then the index stream 05 60 60 60 60 60 60 60 60
  // c1 01 (5, then gaps of 96 up to 781, then 193: 975); it may take up to 17 bytes (maxIndexBytes).
  { name: 'topk gaps past n', opts: { codec: 'topk', k: 0.01 }, n: 1000, mutate: poke(-2, 0xff), message: /index 1037 at position 9 is out of order or out of range/ },
  { name: 'topk stream ends inside an index', opts: { codec: 'topk', k: 0.01 }, n: 1000, mutate: poke(-1, 0x81), message: /index stream ends inside index 9/ },
  { name: 'topk index not minimal', opts: { codec: 'topk-int8', k: 0.01 }, n: 1000, mutate: (b) => { const c = Uint8Array.from([...b, 0]); c[c.length - 2] |= 0x80; return c; }, message: /index 9 is not minimally encoded/ },
  { name: 'topk index over 32 bits', opts: { codec: 'topk', k: 0.01 }, n: 1000, mutate: (b) => Uint8Array.from([...b.slice(0, -1), 0xff, 0xff, 0xff, 0xff, 0x10]), message: /index 9 overflows 32 bits/ },
  { name: 'topk trailing byte', opts: { codec: 'topk', k: 0.01 }, n: 1000, mutate: (b) => Uint8Array.from([...b, 0]), message: /trailing bytes after the last index: 1/ },
  { name: 'topk stream over its longest', opts: { codec: 'topk', k: 0.01 }, n: 1000, mutate: (b) => Uint8Array.from([...b, 1, 2, 3, 4, 5, 6, 7, 8]), message: /length is 79 bytes, topk with n 1000 and k 10 needs 70..77/ },
  { name: 'none Inf value', opts: { codec: 'none' }, n: 10, mutate: u32(20, 0x7f800000), message: /value is not finite/ },
  // topk-int8 n 10, k 3: a scale at 20, q at 24..26, gaps at 27..29.
  { name: 'topk-int8 -128', opts: { codec: 'topk-int8', k: 0.3 }, n: 10, mutate: poke(-4, 0x80), message: /int8 value -128 in block 0/ },
];
