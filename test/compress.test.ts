import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, describe, expect, it, vi } from 'vitest';
import {
  ASYNC_THRESHOLD, CorruptPayloadError, ErrorFeedback, backend, backendReason, codecOf, nativeCodec, typescriptCodec,
  type Codec, type CodecName, type CodecOptions,
} from '../agent/compress';
import { loadNative } from '../agent/compress/native';
import {
  BAD_INPUTS, BAD_OPTIONS, BLOCK_SIZES, CORRUPTIONS, GOLDEN, GOLDEN_INPUT, GOLDEN_V1, LENGTHS, NON_FINITE, SEEDS, gradient,
} from './compress.vectors';

const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
const QUANTIZED: CodecName[] = ['int8', 'int4'];

/** The per-block steps of an int8/int4 payload, read straight from the format (FORMAT.md). */
function steps(b: Uint8Array): Float32Array {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const n = dv.getUint32(8, true);
  const bs = dv.getUint32(12, true);
  const out = new Float32Array(Math.ceil(n / bs));
  for (let i = 0; i < out.length; i++) out[i] = dv.getFloat32(20 + 4 * i, true);
  return out;
}

/** Largest |x - y| / step over all elements (1 = one quantization step). */
function worstError(x: Float32Array, y: Float32Array, b: Uint8Array): number {
  const s = steps(b);
  const bs = new DataView(b.buffer, b.byteOffset).getUint32(12, true);
  let worst = 0;
  for (let i = 0; i < x.length; i++) {
    const step = s[Math.floor(i / bs)];
    const e = step === 0 ? (x[i] === y[i] ? 0 : Infinity) : Math.abs(x[i] - y[i]) / step;
    worst = Math.max(worst, e);
  }
  return worst;
}

const backends: [string, Codec | undefined][] = [['typescript', typescriptCodec], ['native', nativeCodec]];

describe.each(backends)('%s backend', (name, maybeCodec) => {
  if (!maybeCodec) {
    it.skip(`native addon not built: ${backendReason} — run node native/build.js`, () => {});
    return;
  }
  const codec = maybeCodec;

  it('matches the frozen golden encodings', () => {
    const x = Float32Array.from(GOLDEN_INPUT);
    for (const g of GOLDEN) expect(hex(codec.encode(x, g.opts)), JSON.stringify(g.opts)).toBe(g.hex);
  });

  it('still decodes version 1 top-k payloads (absolute indices), and checks them as before', () => {
    for (const g of GOLDEN_V1) {
      const bytes = Uint8Array.from(Buffer.from(g.hex, 'hex'));
      expect(Array.from(codec.decode(bytes)), g.codec).toEqual(g.decoded);
      expect(codecOf(bytes)).toBe(g.codec);
      // Index 1 repeated at position 2.
      const repeated = bytes.slice();
      new DataView(repeated.buffer).setUint32(28, 1, true);
      expect(() => codec.decode(repeated)).toThrow(/index 1 at position 2 is out of order or out of range/);
      expect(() => codec.decode(bytes.slice(0, -1))).toThrow(/length is \d+ bytes, topk(-int8)? with n 7 needs \d+ \(truncated or padded\)/);
    }
  });

  it('round-trips deterministic int8/int4 within half a step, for every length and block size', () => {
    for (const c of QUANTIZED) for (const n of LENGTHS) for (const blockSize of BLOCK_SIZES) {
      const x = gradient(n, n * 31 + blockSize);
      const b = codec.encode(x, { codec: c, blockSize });
      const y = codec.decode(b);
      expect(y.length).toBe(n);
      // Half a step, plus the float32 rounding of q * step.
      expect(worstError(x, y, b), `${c} n=${n} bs=${blockSize}`).toBeLessThanOrEqual(0.5 + 1e-5);
    }
  });

  it('stochastic rounding stays within one step, is reproducible per seed and unbiased', () => {
    for (const c of QUANTIZED) for (const n of [7, 4097]) for (const seed of SEEDS) {
      const x = gradient(n, seed + 1);
      const opts: CodecOptions = { codec: c, stochastic: true, seed, blockSize: 64 };
      const b = codec.encode(x, opts);
      expect(hex(codec.encode(x, opts))).toBe(hex(b));
      expect(b[6]).toBe(1); // stochastic flag
      expect(worstError(x, codec.decode(b), b)).toBeLessThan(1 + 1e-5);
    }
    // Unbiased: averaging over many seeds converges on x (deterministic rounding would not).
    const x = Float32Array.from({ length: 64 }, (_, i) => (i === 0 ? 1 : 0.3 + i * 1e-3));
    const mean = new Float64Array(x.length);
    const seeds = 2000;
    for (let seed = 0; seed < seeds; seed++) {
      const y = codec.decode(codec.encode(x, { codec: 'int4', stochastic: true, seed }));
      for (let i = 0; i < x.length; i++) mean[i] += y[i] / seeds;
    }
    const step = 1 / 7;
    for (let i = 1; i < x.length; i++) expect(Math.abs(mean[i] - x[i])).toBeLessThan(0.05 * step);
    const det = codec.decode(codec.encode(x, { codec: 'int4' }));
    expect(Math.abs(det[1] - x[1])).toBeGreaterThan(0.1 * step);
  });

  it('different seeds give different stochastic encodings', () => {
    const x = gradient(4097, 9);
    const a = hex(codec.encode(x, { codec: 'int8', stochastic: true, seed: 1 }));
    expect(hex(codec.encode(x, { codec: 'int8', stochastic: true, seed: 2 }))).not.toBe(a);
  });

  it('handles all-zero, ±0, all-denormal and outlier blocks exactly as specified', () => {
    for (const c of QUANTIZED) for (const stochastic of [false, true]) {
      const zeros = new Float32Array(300);
      const bz = codec.encode(zeros, { codec: c, stochastic });
      expect(Array.from(steps(bz))).toEqual([0, 0]);
      expect(Array.from(codec.decode(bz))).toEqual(Array.from(zeros));

      const signed = Float32Array.from([-0, 0, -0]);
      const ys = codec.decode(codec.encode(signed, { codec: c, stochastic }));
      expect(ys.every((v) => Object.is(v, 0))).toBe(true); // -0 decodes as +0

      // Subnormal block: step rounded up to a representable subnormal, never 0, never NaN.
      const tiny = Float32Array.from([1e-45, -3e-45, 2.5e-40, -1e-39, 1.17e-38, 0]);
      const bt = codec.encode(tiny, { codec: c, stochastic });
      const yt = codec.decode(bt);
      expect(steps(bt)[0]).toBeGreaterThan(0);
      expect(yt.every(Number.isFinite)).toBe(true);
      expect(worstError(tiny, yt, bt)).toBeLessThanOrEqual(stochastic ? 1 : 0.5 + 1e-5);

      // One huge outlier: its block's step is huge, the others are untouched.
      const x = gradient(512, 5);
      x[3] = 3e38;
      const bo = codec.encode(x, { codec: c, stochastic, blockSize: 256 });
      const yo = codec.decode(bo);
      expect(yo.every(Number.isFinite)).toBe(true);
      expect(yo[3]).toBeCloseTo(3e38, -34);
      expect(worstError(x, yo, bo)).toBeLessThanOrEqual(stochastic ? 1 : 0.5 + 1e-5);
      expect(steps(bo)[1]).toBeLessThan(1);
    }
  });

  it('keeps exactly the k largest magnitudes, ties to the lower index, values exact (topk)', () => {
    const x = Float32Array.from([1, -2, 2, 0.5, -2, 0, 2]);
    const y = codec.decode(codec.encode(x, { codec: 'topk', k: 3 / 7 }));
    expect(Array.from(y)).toEqual([0, -2, 2, 0, -2, 0, 0]);
    for (const n of LENGTHS) {
      const g = gradient(n, n);
      const b = codec.encode(g, { codec: 'topk', k: 0.01 });
      const kept = new DataView(b.buffer, b.byteOffset).getUint32(16, true);
      expect(kept).toBe(Math.max(1, Math.round(0.01 * n)));
      const d = codec.decode(b);
      const idx = Array.from(d.keys()).filter((i) => d[i] !== 0 || Object.is(d[i], -0) && g[i] === 0);
      const threshold = Math.min(...idx.map((i) => Math.abs(g[i])));
      for (const i of idx) expect(d[i]).toBe(g[i]);
      for (let i = 0; i < n; i++) if (!idx.includes(i)) expect(Math.abs(g[i])).toBeLessThanOrEqual(threshold);
    }
    expect(Array.from(codec.decode(codec.encode(Float32Array.from([3, -1]), { codec: 'topk', k: 1 })))).toEqual([3, -1]);
  });

  it('topk-int8 quantizes the kept values within half a step', () => {
    const x = gradient(4097, 11);
    const b = codec.encode(x, { codec: 'topk-int8', k: 0.05, blockSize: 16 });
    const ref = codec.decode(codec.encode(x, { codec: 'topk', k: 0.05 }));
    const y = codec.decode(b);
    let maxAbs = 0;
    for (let i = 0; i < x.length; i++) if (ref[i] !== 0) maxAbs = Math.max(maxAbs, Math.abs(x[i]));
    for (let i = 0; i < x.length; i++) {
      if (ref[i] === 0) expect(y[i]).toBe(0);
      else expect(Math.abs(y[i] - x[i])).toBeLessThanOrEqual((maxAbs / 127) * 0.5 * 1.0001);
    }
  });

  it('encodes and decodes empty tensors', () => {
    for (const c of ['none', 'int8', 'int4', 'topk', 'topk-int8'] as CodecName[]) {
      const b = codec.encode(new Float32Array(0), { codec: c });
      expect(b.length).toBe(20);
      expect(codec.decode(b).length).toBe(0);
      expect(codecOf(b)).toBe(c);
    }
  });

  it.each(BAD_OPTIONS)('refuses bad options: $name', ({ opts, error, message }) => {
    const x = gradient(10, 1);
    expect(() => codec.encode(x, opts as CodecOptions)).toThrow(error);
    expect(() => codec.encode(x, opts as CodecOptions)).toThrow(message);
  });

  it.each(BAD_INPUTS)('refuses a non-Float32Array input: $name', async ({ x }) => {
    expect(() => codec.encode(x as Float32Array, { codec: 'int8' })).toThrow(TypeError);
    await expect(codec.encodeAsync(x as Float32Array, { codec: 'int8' })).rejects.toThrow(TypeError);
  });

  it.each(NON_FINITE)('refuses non-finite input: $name', async ({ x, message }) => {
    for (const c of ['none', 'int8', 'int4', 'topk', 'topk-int8'] as CodecName[]) {
      expect(() => codec.encode(x, { codec: c })).toThrow(RangeError);
      expect(() => codec.encode(x, { codec: c })).toThrow(message);
    }
    await expect(codec.encodeAsync(x, { codec: 'int8' })).rejects.toThrow(message);
  });

  it.each(CORRUPTIONS)('rejects a corrupt payload: $name', ({ opts, n, mutate, message }) => {
    const bad = mutate(codec.encode(gradient(n, 42), opts));
    expect(() => codec.decode(bad)).toThrow(CorruptPayloadError);
    expect(() => codec.decode(bad)).toThrow(message);
  });

  it('refuses to decode something that is not a Uint8Array', () => {
    expect(() => codec.decode(new Float32Array(8) as unknown as Uint8Array)).toThrow(TypeError);
  });

  it('decodes a payload at an unaligned offset inside a larger buffer', () => {
    const x = gradient(1000, 3);
    for (const g of [{ codec: 'int8' }, { codec: 'topk', k: 0.1 }, { codec: 'none' }] as CodecOptions[]) {
      const b = codec.encode(x, g);
      const big = new Uint8Array(b.length + 3);
      big.set(b, 3);
      expect(hex(new Uint8Array(codec.decode(big.subarray(3)).buffer))).toBe(hex(new Uint8Array(codec.decode(b).buffer)));
    }
  });

  it('encodeAsync gives the same bytes as encode, also above the async threshold', async () => {
    for (const n of [1000, ASYNC_THRESHOLD + 3]) {
      const x = gradient(n, 8);
      for (const opts of [{ codec: 'int8' }, { codec: 'int4', stochastic: true, seed: 3 }, { codec: 'topk-int8', k: 0.01 }] as CodecOptions[]) {
        const a = await codec.encodeAsync(x, opts);
        expect(Object.getPrototypeOf(a)).toBe(Uint8Array.prototype);
        expect(hex(a)).toBe(hex(codec.encode(x, opts)));
      }
    }
    await expect(codec.encodeAsync(gradient(10, 1), { codec: 'int8', blockSize: 0 })).rejects.toThrow(RangeError);
  });

  it('returns plain Uint8Array / Float32Array results', () => {
    const b = codec.encode(gradient(10, 1), { codec: 'int8' });
    expect(Object.getPrototypeOf(b)).toBe(Uint8Array.prototype);
    expect(Object.getPrototypeOf(codec.decode(b))).toBe(Float32Array.prototype);
  });

  it('ErrorFeedback: the sum of decoded updates tracks the sum of true updates', () => {
    const n = 1000;
    const ef = new ErrorFeedback(n, codec);
    const sumTrue = new Float64Array(n);
    const sumSent = new Float64Array(n);
    const sumNoEf = new Float64Array(n);
    for (let round = 0; round < 200; round++) {
      const update = gradient(n, 1000 + round, 1e-3);
      const corrected = ef.compensate(update);
      const encoded = codec.encode(corrected, { codec: 'topk-int8', k: 0.1, seed: round, stochastic: true });
      ef.commit(corrected, encoded);
      const sent = codec.decode(encoded);
      const plain = codec.decode(codec.encode(update, { codec: 'topk-int8', k: 0.1 }));
      for (let i = 0; i < n; i++) {
        sumTrue[i] += update[i];
        sumSent[i] += sent[i];
        sumNoEf[i] += plain[i];
      }
    }
    // sumTrue - sumSent equals the residual (up to float32 rounding), which stays bounded, while
    // without error feedback the dropped mass random-walks away.
    let drift = 0;
    let driftNoEf = 0;
    for (let i = 0; i < n; i++) {
      expect(Math.abs(sumTrue[i] - sumSent[i] - ef.residual[i])).toBeLessThan(1e-5);
      drift += (sumTrue[i] - sumSent[i]) ** 2;
      driftNoEf += (sumTrue[i] - sumNoEf[i]) ** 2;
    }
    expect(drift).toBeLessThan(driftNoEf / 5);
  });

  it('ErrorFeedback checks lengths and types', () => {
    const ef = new ErrorFeedback(4, codec);
    expect(() => ef.compensate(new Float32Array(5))).toThrow(RangeError);
    expect(() => ef.compensate([1, 2, 3, 4] as unknown as Float32Array)).toThrow(TypeError);
    expect(() => ef.commit(new Float32Array(4), codec.encode(new Float32Array(5), { codec: 'int8' }))).toThrow(RangeError);
    expect(() => new ErrorFeedback(-1)).toThrow(RangeError);
    expect(() => new ErrorFeedback(1.5)).toThrow(RangeError);
  });
});

describe('native and TypeScript backends agree byte for byte', () => {
  const loaded = loadNative();
  if (!nativeCodec || !loaded.simd) {
    it.skip(`native addon not built: ${backendReason} — run node native/build.js`, () => {});
    return;
  }
  const native = nativeCodec;
  const simd = loaded.simd;
  const initial = simd();
  afterAll(() => void simd(initial === 'avx2' ? 'avx2' : 'baseline'));
  const levels = initial === 'avx2' ? ['avx2', 'baseline'] as const : ['baseline'] as const;

  it.each(levels)('encode, %s kernels: every codec, det and stochastic, lengths, block sizes, seeds', (level) => {
    expect(simd(level)).toBe(level);
    let cases = 0;
    for (const n of [...LENGTHS, 65537]) for (const seed of SEEDS) {
      const x = gradient(n, seed ^ n);
      const opts: CodecOptions[] = [{ codec: 'none' }, { codec: 'topk', k: 0.03 }, { codec: 'topk', k: 1 }];
      for (const blockSize of BLOCK_SIZES) for (const stochastic of [false, true]) {
        opts.push({ codec: 'int8', blockSize, stochastic, seed }, { codec: 'int4', blockSize, stochastic, seed },
          { codec: 'topk-int8', k: 0.1, blockSize, stochastic, seed });
      }
      for (const o of opts) {
        const a = typescriptCodec.encode(x, o);
        const b = native.encode(x, o);
        if (hex(a) !== hex(b)) expect.fail(`bytes differ for n=${n} ${JSON.stringify(o)}`);
        const da = typescriptCodec.decode(a);
        const db = native.decode(b);
        if (hex(new Uint8Array(da.buffer)) !== hex(new Uint8Array(db.buffer))) expect.fail(`decoded floats differ for n=${n} ${JSON.stringify(o)}`);
        cases++;
      }
    }
    expect(cases).toBeGreaterThan(500);
  });

  it('special values: zeros, subnormals, ties, outliers, max float', () => {
    const special = Float32Array.from([0, -0, 1e-45, -1e-45, 1.1754942e-38, 0.5, -0.5, 1.5, 2.5, 3.4028235e38, -3.4028235e38, 127, 1 / 3, 63.5, -63.5]);
    for (const c of ['int8', 'int4', 'topk', 'topk-int8'] as CodecName[]) for (const blockSize of [1, 2, 5, 256]) for (const stochastic of [false, true]) {
      const o = { codec: c, blockSize, stochastic, seed: 77, k: 0.5 };
      expect(hex(native.encode(special, o)), JSON.stringify(o)).toBe(hex(typescriptCodec.encode(special, o)));
    }
  });

  it('corrupt payloads give the same message from both decoders', () => {
    for (const c of CORRUPTIONS) {
      const bad = c.mutate(typescriptCodec.encode(gradient(c.n, 42), c.opts));
      const msg = (f: () => unknown) => { try { f(); return 'no error'; } catch (e) { return (e as Error).message; } };
      expect(msg(() => native.decode(bad)), c.name).toBe(msg(() => typescriptCodec.decode(bad)));
    }
  });
});

describe('codecOf and backend selection', () => {
  it('reads the codec from the header', () => {
    const x = gradient(100, 1);
    for (const c of ['none', 'int8', 'int4', 'topk', 'topk-int8'] as CodecName[]) expect(codecOf(typescriptCodec.encode(x, { codec: c }))).toBe(c);
    expect(() => codecOf(new Uint8Array(3))).toThrow(CorruptPayloadError);
    expect(() => codecOf('x' as unknown as Uint8Array)).toThrow(TypeError);
  });

  it('reports which backend is in use and why', () => {
    expect(['native', 'typescript']).toContain(backend);
    expect(backendReason.length).toBeGreaterThan(0);
    if (nativeCodec && !process.env.FEDGATE_COMPRESS_BACKEND) expect(backend).toBe('native');
  });

  it('FEDGATE_COMPRESS_BACKEND=typescript forces the fallback', async () => {
    vi.stubEnv('FEDGATE_COMPRESS_BACKEND', 'typescript');
    vi.resetModules();
    try {
      const m = await import('../agent/compress');
      expect(m.backend).toBe('typescript');
      expect(m.backendReason).toBe('FEDGATE_COMPRESS_BACKEND=typescript');
      expect(hex(m.encode(Float32Array.from(GOLDEN_INPUT), GOLDEN[1].opts))).toBe(GOLDEN[1].hex);
    } finally {
      vi.unstubAllEnvs();
      vi.resetModules();
    }
  });
});

describe('ErrorFeedback persistence', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fedgate-ef-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('restores the identical residual, atomically, and checks the length', async () => {
    const ef = new ErrorFeedback(1001);
    const corrected = ef.compensate(gradient(1001, 4));
    ef.commit(corrected, typescriptCodec.encode(corrected, { codec: 'topk', k: 0.1 }));
    expect(ef.residual.some((v) => v !== 0)).toBe(true);
    const file = join(dir, 'residual.bin');
    await ef.save(file);
    await ef.save(file); // overwrite in place
    expect(readdirSync(dir)).toEqual(['residual.bin']); // no temp files left behind
    const back = await ErrorFeedback.load(file, 1001);
    expect(hex(new Uint8Array(back.residual.buffer))).toBe(hex(new Uint8Array(ef.residual.buffer)));
    await expect(ErrorFeedback.load(file, 1000)).rejects.toThrow(/residual has 1001 elements, the model has 1000/);
    await expect(ErrorFeedback.load(join(dir, 'missing.bin'), 1001)).rejects.toThrow(/ENOENT/);
  });

  it('refuses truncated or foreign files', async () => {
    const ef = new ErrorFeedback(10);
    const file = join(dir, 'r2.bin');
    await ef.save(file);
    const full = readFileSync(file);
    writeFileSync(file, full.subarray(0, full.length - 4));
    await expect(ErrorFeedback.load(file, 10)).rejects.toThrow(/truncated/);
    writeFileSync(file, Buffer.from('not a residual file at all'));
    await expect(ErrorFeedback.load(file, 10)).rejects.toThrow(/bad magic/);
    const nan = Buffer.from(full);
    nan.writeFloatLE(NaN, 16);
    writeFileSync(file, nan);
    // Version 2 carries a CRC-32 (test/residual-integrity.test.ts): a changed value fails it first.
    await expect(ErrorFeedback.load(file, 10)).rejects.toThrow(/checksum mismatch/);
    // With the checksum made to match, the NaN itself is refused.
    nan.writeUInt32LE(crc32(nan.subarray(16), crc32(nan.subarray(0, 12))), 12);
    writeFileSync(file, nan);
    await expect(ErrorFeedback.load(file, 10)).rejects.toThrow(/non-finite/);
  });
});

// The addon must run on every CPU of its architecture: no host-tuned flag in binding.gyp or in the
// flags node-gyp actually compiled it with (AVX2 kernels are picked at run time instead).
describe('native build flags', () => {
  const root = path.resolve(__dirname, '..');
  const hostTuned = /-m(arch|tune|cpu)=native|-march=/;
  it('binding.gyp and the generated makefile carry no -march/-mtune, and keep -O3 -ffp-contract=off', () => {
    const gypFlags = readFileSync(path.join(root, 'binding.gyp'), 'utf8').split('\n').filter((l) => !l.trim().startsWith('#')).join('\n');
    expect(gypFlags).not.toMatch(hostTuned);
    const mk = path.join(root, 'build', 'fedgate_compress.target.mk');
    if (!existsSync(mk)) return; // not built here (no compiler): the TypeScript fallback is in use
    const flags = readFileSync(mk, 'utf8');
    expect(flags).not.toMatch(hostTuned);
    expect(flags).toContain('-O3');
    expect(flags).toContain('-ffp-contract=off');
  });
});
