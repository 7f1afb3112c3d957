/**
 * Gradient-compression throughput: GB/s of float32 input for the native addon, the TypeScript
 * fallback and a plain memory copy of the same buffer, side by side in one run.
 *   npm run bench:quant            (N=10M floats; QUANT_N=... and QUANT_REPS=... override)
 * Prints a table, then as the last line one JSON object with the figures and ratios.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { nativeCodec, typescriptCodec, type Codec, type CodecOptions } from '../agent/compress';

// Collect garbage before every timed run, so no run pays for the previous runs' results.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const N = Number(process.env.QUANT_N ?? 10_000_000);
const REPS = Number(process.env.QUANT_REPS ?? 7);

/** Gradient-like data: N(0, 1e-3) with one outlier in 10^4, from a seeded generator. */
function gradient(n: number): Float32Array {
  const x = new Float32Array(n);
  let s = 0x9e3779b9;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 2 ** 32;
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(next())) * 1e-3;
    const t = 2 * Math.PI * next();
    x[i] = r * Math.cos(t);
    if (i + 1 < n) x[i + 1] = r * Math.sin(t);
  }
  for (let i = 7; i < n; i += 10_000) x[i] *= 50;
  return x;
}

/** Median and best seconds of `reps` timed runs after one warm-up run. */
function timeBoth(fn: () => unknown, reps = REPS): { median: number; best: number } {
  fn();
  const t: number[] = [];
  for (let r = 0; r < reps; r++) {
    gc();
    const t0 = process.hrtime.bigint();
    fn();
    t.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  t.sort((a, b) => a - b);
  return { median: t[Math.floor(t.length / 2)], best: t[0] };
}
const time = (fn: () => unknown): number => timeBoth(fn).median;

const x = gradient(N);
const bytes = 4 * N;
const gbps = (sec: number) => bytes / sec / 1e9;

const dst = new Float32Array(N);
const src8 = Buffer.from(x.buffer, x.byteOffset, x.byteLength);
const dst8 = Buffer.from(dst.buffer);
const memcpy = Math.max(gbps(time(() => dst.set(x))), gbps(time(() => src8.copy(dst8))));
// For context: a copy into a fresh buffer pays for page faults, as every encode's result does.
const freshCopy = gbps(time(() => x.slice()));

const cases: [string, CodecOptions][] = [
  ['int8', { codec: 'int8' }],
  ['int8-stochastic', { codec: 'int8', stochastic: true, seed: 1 }],
  ['int4', { codec: 'int4' }],
  ['int4-stochastic', { codec: 'int4', stochastic: true, seed: 1 }],
  ['topk-1%', { codec: 'topk', k: 0.01 }],
  ['topk-int8-1%', { codec: 'topk-int8', k: 0.01 }],
];

const rows: Record<string, {
  native: number | null; nativeBest: number | null; typescript: number; nativeVsMemcpy: number | null; nativeVsTypescript: number | null;
}> = {};
const fmt = (v: number | null, d = 2) => (v === null ? '-' : v.toFixed(d));
console.log(`fedgate compress bench: ${N.toLocaleString('en')} float32 (${(bytes / 1e6).toFixed(0)} MB), median of ${REPS}, node ${process.version}, ${process.arch}`);
console.log(`memory copy into an existing buffer (TypedArray.set / Buffer.copy, best): ${memcpy.toFixed(2)} GB/s`);
console.log(`memory copy into a fresh buffer (Float32Array.slice, for context): ${freshCopy.toFixed(2)} GB/s`);
console.log('GB/s of float32 input, median (best) of the runs; every encode allocates its result');
console.log('codec              native GB/s       TS GB/s   native/memcpy   native/TS');
for (const [name, opts] of cases) {
  const run = (c: Codec) => timeBoth(() => c.encode(x, opts));
  const nt = nativeCodec ? run(nativeCodec) : null;
  const native = nt && gbps(nt.median);
  const nativeBest = nt && gbps(nt.best);
  const ts = gbps(run(typescriptCodec).median);
  rows[name] = {
    native, nativeBest, typescript: ts,
    nativeVsMemcpy: native === null ? null : native / memcpy,
    nativeVsTypescript: native === null ? null : native / ts,
  };
  const r = rows[name];
  const both = native === null ? '-' : `${fmt(native)} (${fmt(nativeBest)})`;
  console.log(`${name.padEnd(18)} ${both.padStart(15)} ${fmt(ts).padStart(9)} ${fmt(r.nativeVsMemcpy).padStart(15)} ${fmt(r.nativeVsTypescript, 1).padStart(10)}`);
}

// The event loop stays free while a large tensor is encoded on the libuv pool.
let asyncInfo: { seconds: number; ticksWhileEncoding: number } | null = null;
async function measureAsync(): Promise<void> {
  if (!nativeCodec) return;
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const t0 = process.hrtime.bigint();
  await nativeCodec.encodeAsync(x, { codec: 'int8' });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  clearInterval(timer);
  asyncInfo = { seconds, ticksWhileEncoding: ticks };
  console.log(`native encodeAsync int8: ${seconds.toFixed(4)} s (incl. input copy), event-loop ticks meanwhile: ${ticks}`);
}

void measureAsync().then(() => {
  const int8 = rows.int8;
  const goals = {
    int8NativeAtLeastHalfMemcpy: int8.nativeVsMemcpy !== null && int8.nativeVsMemcpy >= 0.5,
    int8NativeAtLeast6xTypescript: int8.nativeVsTypescript !== null && int8.nativeVsTypescript >= 6,
  };
  const round = (v: number | null) => (v === null ? null : Math.round(v * 1000) / 1000);
  const codecs = Object.fromEntries(Object.entries(rows).map(([k, r]) => [k, {
    nativeGBps: round(r.native), nativeBestGBps: round(r.nativeBest), typescriptGBps: round(r.typescript),
    nativeVsMemcpy: round(r.nativeVsMemcpy), nativeVsTypescript: round(r.nativeVsTypescript),
  }]));
  console.log(JSON.stringify({
    bench: 'quant', n: N, reps: REPS, node: process.version, arch: process.arch,
    native: nativeCodec !== undefined, memcpyGBps: round(memcpy), freshCopyGBps: round(freshCopy), codecs, encodeAsync: asyncInfo, goals,
  }));
});
