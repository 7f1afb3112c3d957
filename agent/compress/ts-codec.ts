/**
 * Pure-TypeScript codec: the fallback when the native addon is not built, and the reference the
 * addon is tested against. It mirrors native/compress.cc operation for operation, so the bytes are
 * identical: every float32 operation of the C++ code is a double operation rounded with
 * Math.fround here (exact for one +, -, *, / on float32 operands), magnitudes are compared on
 * their bit patterns, and the stochastic-rounding noise is the same integer hash.
 */
import {
  CodecId, CorruptPayloadError, HEADER_BYTES, blocks, encodedSize, indexStreamBytes, readHeader, sparse, sparseValueBytes,
  writeHeader, type Params,
} from './format';

const fround = Math.fround;
const FLT_MIN = 1.1754943508222875e-38; // smallest normal float32
const RNE = 12582912; // 1.5 * 2^23: (y + RNE) - RNE rounds a float32 |y| < 2^22 half to even
const TWO_M24 = 5.9604644775390625e-8; // 2^-24
const NONFINITE = 0x7f800000; // abs bit patterns >= this are Inf or NaN

export interface RawBackend {
  encode(x: Float32Array, p: Params): Uint8Array;
  /** Only the native backend has a real asynchronous path. */
  encodeAsync?(x: Float32Array, p: Params): Promise<Uint8Array>;
  decode(bytes: Uint8Array): Float32Array;
}

// Float32 <-> bits for single values.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const floatOf = (bits: number): number => ((u32[0] = bits), f32[0]);
const bitsOf = (v: number): number => ((f32[0] = v), u32[0]);

// --- stochastic-rounding noise: lowbias32 over a Weyl-scrambled counter (see compress.cc) -------
function lowbias32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}
const streamKey = (seed: number): number => lowbias32((seed + 0x6a09e667) >>> 0);

export function nonFiniteMessage(x: Float32Array): string {
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i])) return `input[${i}] is ${x[i]}: compress input must be finite`;
  }
  return 'input is not finite';
}

function maxAbsBits(u: Uint32Array, start: number, end: number): number {
  let m = 0;
  for (let i = start; i < end; i++) {
    const a = u[i] & 0x7fffffff;
    if (a > m) m = a;
  }
  return m;
}

/** The smallest float32 step s >= absmax / levels. */
function stepFor(absBits: number, levels: number): number {
  const m = floatOf(absBits);
  let s = fround(m / levels);
  if (s * levels < m) s = floatOf(bitsOf(s) + 1);
  return s;
}

function quantizeBlock(
  x: Float32Array, start: number, len: number, s: number, levels: number,
  stochastic: boolean, key: number, q: Int8Array,
): void {
  const end = start + len;
  if (s === 0) { q.fill(0, start, end); return; }
  // Four loops rather than branches inside one: the fallback's speed matters on gateways too.
  if (s >= FLT_MIN) {
    const inv = fround(1 / s);
    if (stochastic) {
      for (let i = start; i < end; i++) {
        const r = Math.floor(fround(fround(x[i] * inv) + (lowbias32(Math.imul(i, 0x9e3779b9) ^ key) >>> 8) * TWO_M24));
        q[i] = r < -levels ? -levels : r > levels ? levels : r;
      }
    } else {
      // Round half to even; |y| < levels + 0.5, so no clamp (as in compress.cc).
      for (let i = start; i < end; i++) q[i] = fround(fround(x[i] * inv) + RNE) - RNE;
    }
  } else if (stochastic) {
    for (let i = start; i < end; i++) {
      const r = Math.floor(fround(fround(x[i] / s) + (lowbias32(Math.imul(i, 0x9e3779b9) ^ key) >>> 8) * TWO_M24));
      q[i] = r < -levels ? -levels : r > levels ? levels : r;
    }
  } else {
    for (let i = start; i < end; i++) q[i] = fround(fround(x[i] / s) + RNE) - RNE;
  }
}

/** Scales (little-endian float32 per block) into `scales`, one int8 per element into `q`. */
function quantize(
  x: Float32Array, bs: number, levels: number, stochastic: boolean, seed: number,
  scales: Float32Array, q: Int8Array,
): void {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const key = streamKey(seed);
  for (let start = 0, b = 0; start < x.length; start += bs, b++) {
    const len = Math.min(bs, x.length - start);
    const m = maxAbsBits(u, start, start + len);
    if (m >= NONFINITE) throw new RangeError(nonFiniteMessage(x));
    const s = stepFor(m, levels);
    scales[b] = s;
    quantizeBlock(x, start, len, s, levels, stochastic, key, q);
  }
}

/** Indices (ascending) of the k largest |x|, ties to the lower index; see topkSelect in compress.cc. */
function topkSelect(x: Float32Array, k: number): Uint32Array {
  const n = x.length;
  const u = new Uint32Array(x.buffer, x.byteOffset, n);
  const hist = new Uint32Array(1 << 15);
  let worst = 0;
  for (let i = 0; i < n; i++) {
    const a = u[i] & 0x7fffffff;
    if (a > worst) worst = a;
    hist[a >>> 16]++;
  }
  if (worst >= NONFINITE) throw new RangeError(nonFiniteMessage(x));
  const idx = new Uint32Array(k);
  if (k === 0) return idx;
  let above = 0;
  let bin = (1 << 15) - 1;
  while (above + hist[bin] < k) above += hist[bin--];
  const cand = new Uint32Array(hist[bin]);
  for (let i = 0, c = 0; i < n; i++) {
    const a = u[i] & 0x7fffffff;
    if (a >>> 16 === bin) cand[c++] = a;
  }
  cand.sort(); // one histogram bin only: a small fraction of n
  const need = k - above;
  const t = cand[cand.length - need];
  let ties = need;
  for (let c = cand.length - 1; c >= 0 && cand[c] > t; c--) ties--;
  for (let i = 0, j = 0; j < k; i++) {
    const a = u[i] & 0x7fffffff;
    if (a > t || (a === t && ties > 0 && ties--)) idx[j++] = i;
  }
  return idx;
}

function encode(x: Float32Array, p: Params): Uint8Array {
  const idx = sparse(p.codec) ? topkSelect(x, p.k) : undefined;
  const size = encodedSize(p, idx && indexStreamBytes(idx));
  // Every byte is written below, so skip the zero fill (as the addon does).
  const out = new Uint8Array(Buffer.allocUnsafeSlow(size).buffer, 0, size);
  writeHeader(out, p);
  const body = HEADER_BYTES; // offset: 20, so 4-byte aligned views below
  const nb = blocks(p.n, p.blockSize);
  switch (p.codec) {
    case CodecId.None: {
      const u = new Uint32Array(x.buffer, x.byteOffset, p.n);
      if (maxAbsBits(u, 0, p.n) >= NONFINITE) throw new RangeError(nonFiniteMessage(x));
      new Float32Array(out.buffer, body, p.n).set(x);
      break;
    }
    case CodecId.Int8:
      quantize(x, p.blockSize, 127, p.stochastic, p.seed,
        new Float32Array(out.buffer, body, nb), new Int8Array(out.buffer, body + 4 * nb, p.n));
      break;
    case CodecId.Int4: {
      const q = new Int8Array(p.n + 1); // +1: a zero partner for the last element of an odd count
      quantize(x, p.blockSize, 7, p.stochastic, p.seed, new Float32Array(out.buffer, body, nb), q);
      const packed = out.subarray(body + 4 * nb);
      for (let j = 0; j < packed.length; j++) packed[j] = (q[2 * j] & 0x0f) | ((q[2 * j + 1] & 0x0f) << 4);
      break;
    }
    case CodecId.Topk:
    case CodecId.TopkInt8: {
      // The kept values, then the index stream (FORMAT.md, version 2).
      const vals = new Float32Array(p.k);
      for (let j = 0; j < p.k; j++) vals[j] = x[idx![j]];
      if (p.codec === CodecId.Topk) {
        new Float32Array(out.buffer, body, p.k).set(vals);
      } else {
        const kb = blocks(p.k, p.blockSize);
        quantize(vals, p.blockSize, 127, p.stochastic, p.seed,
          new Float32Array(out.buffer, body, kb), new Int8Array(out.buffer, body + 4 * kb, p.k));
      }
      let o = body + sparseValueBytes(p);
      for (let j = 0; j < p.k; j++) {
        let v = j ? idx![j] - idx![j - 1] - 1 : idx![0];
        while (v >= 0x80) {
          out[o++] = (v & 0x7f) | 0x80;
          v >>>= 7;
        }
        out[o++] = v;
      }
      break;
    }
  }
  return out;
}

function dequantize(scales: Float32Array, q: Int8Array, bs: number, out: Float32Array): void {
  const su = new Uint32Array(scales.buffer, scales.byteOffset, scales.length);
  for (let start = 0, b = 0; start < q.length; start += bs, b++) {
    if (su[b] >= NONFINITE) throw new CorruptPayloadError(`scale of block ${b} is not a finite number >= 0`);
    const s = scales[b];
    const end = Math.min(start + bs, q.length);
    let bad = false;
    for (let i = start; i < end; i++) {
      bad ||= q[i] === -128;
      out[i] = q[i] * s;
    }
    if (bad) throw new CorruptPayloadError(`int8 value -128 in block ${b} (range is -127..127)`);
  }
}

/** Reads the k LEB128 gaps from `start` to the end of `b` and puts v[j] at the j-th index. */
function scatterIndexStream(b: Uint8Array, start: number, n: number, v: Float32Array, out: Float32Array): void {
  let s = start;
  let prev = -1;
  for (let j = 0; j < v.length; j++) {
    let gap = 0;
    for (let shift = 0; ; shift += 7) {
      if (s === b.length) throw new CorruptPayloadError(`index stream ends inside index ${j}`);
      const byte = b[s++];
      if (shift === 28 && byte > 0x0f) throw new CorruptPayloadError(`index ${j} overflows 32 bits`);
      gap += (byte & 0x7f) * 2 ** shift;
      if (!(byte & 0x80)) {
        if (byte === 0 && shift > 0) throw new CorruptPayloadError(`index ${j} is not minimally encoded`);
        break;
      }
    }
    const i = prev + 1 + gap;
    if (i >= n) throw new CorruptPayloadError(`index ${i} at position ${j} is out of order or out of range`);
    out[i] = v[j];
    prev = i;
  }
  if (s !== b.length) throw new CorruptPayloadError(`trailing bytes after the last index: ${b.length - s}`);
}

function decode(bytes: Uint8Array): Float32Array {
  const h = readHeader(bytes);
  // Typed-array views need 4-byte alignment; a payload sliced out of a larger buffer may lack it.
  const b = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  const body = b.byteOffset + HEADER_BYTES;
  const out = new Float32Array(h.n);
  const nb = blocks(h.n, h.blockSize);
  switch (h.codec) {
    case CodecId.None: {
      const u = new Uint32Array(b.buffer, body, h.n);
      if (maxAbsBits(u, 0, h.n) >= NONFINITE) throw new CorruptPayloadError('value is not finite');
      out.set(new Float32Array(b.buffer, body, h.n));
      break;
    }
    case CodecId.Int8:
      dequantize(new Float32Array(b.buffer, body, nb), new Int8Array(b.buffer, body + 4 * nb, h.n), h.blockSize, out);
      break;
    case CodecId.Int4: {
      const scales = new Float32Array(b.buffer, body, nb);
      const su = new Uint32Array(b.buffer, body, nb);
      const packed = new Uint8Array(b.buffer, body + 4 * nb, Math.ceil(h.n / 2));
      for (let start = 0, blk = 0; start < h.n; start += h.blockSize, blk++) {
        if (su[blk] >= NONFINITE) throw new CorruptPayloadError(`scale of block ${blk} is not a finite number >= 0`);
        const s = scales[blk];
        const end = Math.min(start + h.blockSize, h.n);
        let bad = false;
        for (let i = start; i < end; i++) {
          const nib = (packed[i >>> 1] >>> ((i & 1) * 4)) & 0x0f;
          bad ||= nib === 8;
          out[i] = ((nib ^ 8) - 8) * s; // explicit sign extension of a 4-bit value
        }
        if (bad) throw new CorruptPayloadError(`int4 value -8 in block ${blk} (range is -7..7)`);
      }
      if (h.n & 1 && packed[h.n >>> 1] >>> 4 !== 0) throw new CorruptPayloadError('int4 padding nibble is not 0');
      break;
    }
    case CodecId.Topk:
    case CodecId.TopkInt8: {
      const off = h.version === 1 ? body + 4 * h.k : body;
      let v: Float32Array;
      if (h.codec === CodecId.Topk) {
        if (maxAbsBits(new Uint32Array(b.buffer, off, h.k), 0, h.k) >= NONFINITE) throw new CorruptPayloadError('value is not finite');
        v = new Float32Array(b.buffer, off, h.k);
      } else {
        const kb = blocks(h.k, h.blockSize);
        v = new Float32Array(h.k);
        dequantize(new Float32Array(b.buffer, off, kb), new Int8Array(b.buffer, off + 4 * kb, h.k), h.blockSize, v);
      }
      if (h.version === 1) {
        // Absolute u32 indices (written before version 2).
        const idx = new Uint32Array(b.buffer, body, h.k);
        let prev = -1;
        for (let j = 0; j < h.k; j++) {
          const i = idx[j];
          if (i <= prev || i >= h.n) throw new CorruptPayloadError(`index ${i} at position ${j} is out of order or out of range`);
          out[i] = v[j];
          prev = i;
        }
        break;
      }
      scatterIndexStream(b, body - b.byteOffset + sparseValueBytes(h), h.n, v, out);
      break;
    }
  }
  return out;
}

export const typescriptBackend: RawBackend = { encode, decode };
