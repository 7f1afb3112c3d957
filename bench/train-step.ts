/**
 * Times one SGD step of the 784-128-10 MLP at batch 32 and 128, three ways side by side, all on
 * ONE thread: fedgate's ORT step as the Trainer runs it (worker thread, ONNX Scan over blocks of
 * batches), PyTorch on CPU (Debian's python3-torch via /usr/bin/python3), and a plain TypeScript
 * loop. Prints a table, then as the last line one JSON object with ms/step and ratios.
 *
 *   npm run bench:train-step            (FEDGATE_BENCH_QUICK=1 for a short run)
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { buildTrainStepModel, initParams, mlp, paramLayout, seededRandom } from '../agent/model';
import { Trainer } from '../agent/train';
import { makeTsStep } from './train-step-ts';

const BATCHES = [32, 128];
const THREADS = 1;
const QUICK = process.env.FEDGATE_BENCH_QUICK === '1';
const SAMPLES = 6144; // divisible by both batch sizes: every step is a full batch, like torch's
const PY = '/usr/bin/python3';
const spec = mlp(784, [128], 10);

type PerBatch = Record<string, number>;

/** The machine is shared (2 cores): time in chunks and keep the median chunk, so a burst of other work skews less. */
const CHUNKS = 5;
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

async function msPerStep(steps: number, run: (steps: number) => Promise<number> | number): Promise<number> {
  const per = Math.max(1, Math.round(steps / CHUNKS));
  const samples: number[] = [];
  for (let c = 0; c < CHUNKS; c++) {
    const t = performance.now();
    const done = await run(per);
    samples.push((performance.now() - t) / done);
  }
  return median(samples);
}

function syntheticData(n: number): { x: Float32Array; labels: Uint8Array } {
  const rand = seededRandom(1);
  const x = new Float32Array(n * 784);
  for (let i = 0; i < x.length; i++) x[i] = rand();
  return { x, labels: Uint8Array.from({ length: n }, () => Math.floor(rand() * 10)) };
}

async function benchTrainer(data: { x: Float32Array; labels: Uint8Array }): Promise<PerBatch> {
  const trainer = await Trainer.create(spec, { threads: THREADS });
  const out: PerBatch = {};
  try {
    await trainer.setData(data.x, data.labels);
    for (const B of BATCHES) {
      const steps = (QUICK ? 500 : 4000) / (B / 32);
      const task = { params: initParams(spec, 1), batchSize: B, lr: 0.01, seed: 1 };
      await trainer.train({ ...task, steps: 100 });
      // wall time seen by the caller, messaging included
      out[B] = await msPerStep(steps, async (n) => (await trainer.train({ ...task, steps: n })).steps);
    }
  } finally {
    await trainer.close();
  }
  return out;
}

/** The naive way, for reference: one session.run per batch, every param fed in and copied out each step. */
async function benchOneRunPerStep(data: { x: Float32Array; labels: Uint8Array }): Promise<PerBatch> {
  const session = await ort.InferenceSession.create(buildTrainStepModel(spec), {
    graphOptimizationLevel: 'all', executionMode: 'sequential', intraOpNumThreads: THREADS, interOpNumThreads: 1,
  });
  const layout = paramLayout(spec);
  const out: PerBatch = {};
  for (const B of BATCHES) {
    const steps = (QUICK ? 200 : 1500) / (B / 32);
    const y = new Float32Array(B * 10);
    let params = initParams(spec, 1);
    const lr = new ort.Tensor('float32', Float32Array.of(0.01), []);
    let s = 0;
    const one = async () => {
      const off = (s++ * B) % SAMPLES;
      y.fill(0);
      for (let r = 0; r < B; r++) y[r * 10 + data.labels[off + r]] = 1;
      const feeds: Record<string, ort.Tensor> = {
        x: new ort.Tensor('float32', data.x.subarray(off * 784, (off + B) * 784), [B, 784]),
        y: new ort.Tensor('float32', y, [B, 10]),
        lr,
      };
      for (const p of layout) feeds[p.name] = new ort.Tensor('float32', params.subarray(p.offset, p.offset + p.size), p.shape);
      const res = await session.run(feeds);
      const next = new Float32Array(params.length);
      for (const p of layout) next.set(res[`${p.name}_new`].data as Float32Array, p.offset);
      params = next;
    };
    for (let i = 0; i < 50; i++) await one();
    out[B] = await msPerStep(steps, async (n) => {
      for (let i = 0; i < n; i++) await one();
      return n;
    });
  }
  await session.release();
  return out;
}

async function benchTs(data: { x: Float32Array; labels: Uint8Array }): Promise<PerBatch> {
  const step = makeTsStep(spec, Math.max(...BATCHES));
  const out: PerBatch = {};
  for (const B of BATCHES) {
    const steps = (QUICK ? 10 : 40) / (B / 32);
    const params = initParams(spec, 1);
    const run = (s: number) => {
      const off = (s * B) % SAMPLES;
      step(params, data.x.subarray(off * 784, (off + B) * 784), data.labels.subarray(off, off + B), B, 0.01);
    };
    for (let s = 0; s < 3; s++) run(s);
    out[B] = await msPerStep(steps, (n) => {
      for (let s = 0; s < n; s++) run(s);
      return n;
    });
  }
  return out;
}

/** The baselines must compute the same step: compare one TS step with one ORT step from the same params. */
async function checkTsAgainstOrt(data: { x: Float32Array; labels: Uint8Array }): Promise<number> {
  const B = 32;
  const session = await ort.InferenceSession.create(buildTrainStepModel(spec));
  const start = initParams(spec, 7);
  const y = new Float32Array(B * 10);
  for (let r = 0; r < B; r++) y[r * 10 + data.labels[r]] = 1;
  const feeds: Record<string, ort.Tensor> = {
    x: new ort.Tensor('float32', data.x.subarray(0, B * 784), [B, 784]),
    y: new ort.Tensor('float32', y, [B, 10]),
    lr: new ort.Tensor('float32', Float32Array.of(0.1), []),
  };
  for (const p of paramLayout(spec)) feeds[p.name] = new ort.Tensor('float32', start.subarray(p.offset, p.offset + p.size), p.shape);
  const out = await session.run(feeds);
  const mine = Float32Array.from(start);
  makeTsStep(spec, B)(mine, data.x, data.labels, B, 0.1);
  let maxDiff = 0;
  for (const p of paramLayout(spec)) {
    const o = out[`${p.name}_new`].data as Float32Array;
    for (let i = 0; i < p.size; i++) maxDiff = Math.max(maxDiff, Math.abs(o[i] - mine[p.offset + i]));
  }
  await session.release();
  return maxDiff;
}

interface TorchRun { ms?: PerBatch; version?: string; blas?: string; skipped?: string }

function benchTorch(): TorchRun {
  const script = path.resolve(__dirname, __filename.endsWith('.ts') ? '.' : '../../bench', 'train_step_torch.py');
  if (!fs.existsSync(PY)) return { skipped: `${PY} not found (Debian python3 + python3-torch)` };
  const env = { ...process.env, OMP_NUM_THREADS: String(THREADS), OPENBLAS_NUM_THREADS: String(THREADS), MKL_NUM_THREADS: String(THREADS) };
  const args = [script, '--threads', String(THREADS), '--batches', BATCHES.join(','), '--steps', QUICK ? '200' : '1500'];
  const res = spawnSync(PY, args, { env, encoding: 'utf8', timeout: 600_000 });
  const last = res.stdout?.trim().split('\n').pop() ?? '';
  let parsed: { torch?: PerBatch; version?: string; blas?: string; skipped?: string } = {};
  try {
    parsed = JSON.parse(last);
  } catch {
    return { skipped: `torch script failed (exit ${res.status}): ${(res.stderr || res.error?.message || '').trim().split('\n').pop()}` };
  }
  if (parsed.skipped) {
    const apt = fs.existsSync('/tmp/apt.log') ? ' (apt may still be installing python3-torch: see /tmp/apt.log)' : ' (apt-get install python3-torch)';
    return { skipped: parsed.skipped + apt };
  }
  return { ms: parsed.torch, version: parsed.version, blas: parsed.blas };
}

const fmt = (v: number | undefined) => (v === undefined ? '—' : v < 10 ? v.toFixed(3) : v.toFixed(1));
const ratio = (a: PerBatch, b?: PerBatch): PerBatch | null =>
  b ? Object.fromEntries(BATCHES.map((B) => [B, Number((a[B] / b[B]).toFixed(3))])) : null;
const round = (o: PerBatch): PerBatch => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Number(v.toFixed(4))]));

async function main(): Promise<void> {
  const load = os.loadavg();
  const data = syntheticData(SAMPLES);
  const ortMs = await benchTrainer(data);
  const naiveMs = await benchOneRunPerStep(data);
  const torch = benchTorch();
  const tsMs = await benchTs(data);
  const tsDiff = await checkTsAgainstOrt(data);

  console.log(`train step, MLP 784-128-10 (ReLU, softmax cross-entropy, plain SGD), ${THREADS} thread, ms/step`);
  console.log(`median of ${CHUNKS} timed chunks per figure; load average at start ${load.map((l) => l.toFixed(2)).join(' ')} on ${os.cpus().length} cores`);
  console.log(`ORT ${ort.env.versions.common}, torch ${torch.version ?? '-'}${torch.blas ? ` (BLAS: ${torch.blas})` : ''}, Node ${process.version}`);
  console.log('');
  const rows: Array<[string, PerBatch | undefined]> = [
    ['fedgate ORT (Trainer: worker, Scan of 16 steps/run)', ortMs],
    ['  ORT, one session.run per step (not used)', naiveMs],
    ['PyTorch CPU (1 thread)', torch.ms],
    ['plain TypeScript loop', tsMs],
  ];
  const w = Math.max(...rows.map(([n]) => n.length));
  console.log(`${'method'.padEnd(w)}  ${BATCHES.map((B) => `batch ${B}`.padStart(10)).join('  ')}`);
  for (const [name, ms] of rows) console.log(`${name.padEnd(w)}  ${BATCHES.map((B) => fmt(ms?.[B]).padStart(10)).join('  ')}`);
  const vsTorch = ratio(ortMs, torch.ms);
  const vsTs = ratio(ortMs, tsMs);
  console.log('');
  if (torch.skipped) console.log(`PyTorch skipped: ${torch.skipped}`);
  if (vsTorch) console.log(`ORT / torch: ${BATCHES.map((B) => `${vsTorch[B]}× @${B}`).join(', ')}   (goal ≤ 0.5×)`);
  if (torch.blas && /blas\/libblas|netlib|reference/i.test(torch.blas)) {
    console.log('warning: torch runs on the reference BLAS (Debian default without libopenblas0): its figure is not representative');
  }
  console.log(`ORT / TypeScript: ${BATCHES.map((B) => `${vsTs![B]}× @${B}`).join(', ')}   (TS step matches ORT's to ${tsDiff.toExponential(1)} max abs)`);
  console.log(
    JSON.stringify({
      bench: 'train-step',
      model: '784-128-10',
      threads: THREADS,
      ms_per_step: { ort: round(ortMs), ort_one_run_per_step: round(naiveMs), torch: torch.ms ? round(torch.ms) : null, ts: round(tsMs) },
      ratios: { ort_over_torch: vsTorch, ort_over_ts: vsTs },
      torch: torch.skipped ? { skipped: torch.skipped } : { version: torch.version, blas: torch.blas },
    }),
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
