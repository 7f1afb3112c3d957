/**
 * Times one SGD step of the 784-128-10 MLP at batch 32 and 128, three ways side by side, all on
 * ONE thread: fedgate's ORT step as the Trainer runs it (worker thread, ONNX Scan over blocks of
 * batches), PyTorch on CPU (Debian's python3-torch via /usr/bin/python3), and a plain TypeScript
 * loop. The machine may be shared, so the methods are timed in interleaved rounds and each figure
 * is the median round. Prints a table, then as the last line one JSON object (ms/step, ratios).
 *
 *   npm run bench:train-step            (FEDGATE_BENCH_QUICK=1 for a short run)
 */
import * as os from 'node:os';
import * as ort from 'onnxruntime-node';
import { buildTrainStepModel, initParams, mlp, paramLayout, seededRandom } from '../agent/model';
import { Trainer } from '../agent/train';
import { makeTsStep } from './train-step-ts';
import { type TorchServer, startTorch } from './train-step-torch';

const BATCHES = [32, 128];
const THREADS = 1;
const QUICK = process.env.FEDGATE_BENCH_QUICK === '1';
const ROUNDS = QUICK ? 3 : 7;
const SAMPLES = 6144; // divisible by both batch sizes: every step is a full batch, like torch's
const spec = mlp(784, [128], 10);

type Data = { x: Float32Array; labels: Uint8Array };
type PerBatch = Record<number, number>;
/** Runs about `steps` steps at batch size B and returns ms per step. */
type Method = (B: number, steps: number) => Promise<number>;

function syntheticData(n: number): Data {
  const rand = seededRandom(1);
  const x = new Float32Array(n * 784);
  for (let i = 0; i < x.length; i++) x[i] = rand();
  return { x, labels: Uint8Array.from({ length: n }, () => Math.floor(rand() * 10)) };
}

/** Wall time seen by the caller of Trainer.train, worker messaging included. */
async function trainerMethod(data: Data): Promise<{ run: Method; close: () => Promise<void> }> {
  const trainer = await Trainer.create(spec, { threads: THREADS });
  await trainer.setData(data.x, data.labels);
  const params = initParams(spec, 1);
  const run: Method = async (B, steps) => {
    const t = performance.now();
    const res = await trainer.train({ params, steps, batchSize: B, lr: 0.01, seed: 1 });
    return (performance.now() - t) / res.steps;
  };
  return { run, close: () => trainer.close() };
}

/** The naive way, for reference: one session.run per batch, every param fed in and copied out each step. */
async function oneRunPerStepMethod(data: Data): Promise<{ run: Method; close: () => Promise<void> }> {
  const session = await ort.InferenceSession.create(buildTrainStepModel(spec), {
    graphOptimizationLevel: 'all', executionMode: 'sequential', intraOpNumThreads: THREADS, interOpNumThreads: 1,
  });
  const layout = paramLayout(spec);
  const lr = new ort.Tensor('float32', Float32Array.of(0.01), []);
  let params = initParams(spec, 1);
  let cursor = 0;
  const run: Method = async (B, steps) => {
    const y = new Float32Array(B * 10);
    const t = performance.now();
    for (let s = 0; s < steps; s++) {
      const off = (cursor++ * B) % SAMPLES;
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
    }
    return (performance.now() - t) / steps;
  };
  return { run, close: () => session.release() };
}

function tsMethod(data: Data): Method {
  const step = makeTsStep(spec, Math.max(...BATCHES));
  const params = initParams(spec, 1);
  let cursor = 0;
  return async (B, steps) => {
    const t = performance.now();
    for (let s = 0; s < steps; s++) {
      const off = (cursor++ * B) % SAMPLES;
      step(params, data.x.subarray(off * 784, (off + B) * 784), data.labels.subarray(off, off + B), B, 0.01);
    }
    return (performance.now() - t) / steps;
  };
}

/** The baselines must compute the same step: compare one TS step with one ORT step from the same params. */
async function tsVersusOrt(data: Data): Promise<number> {
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

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const fmt = (v: number | undefined) => (v === undefined ? '—' : v < 10 ? v.toFixed(3) : v.toFixed(1));
const ratio = (a: PerBatch, b?: PerBatch): PerBatch | null =>
  b ? Object.fromEntries(BATCHES.map((B) => [B, Number((a[B] / b[B]).toFixed(3))])) : null;
const round4 = (o: PerBatch): PerBatch => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Number(v.toFixed(4))]));

async function main(): Promise<void> {
  const load = os.loadavg();
  const data = syntheticData(SAMPLES);
  const trainer = await trainerMethod(data);
  const naive = await oneRunPerStepMethod(data);
  const torch: TorchServer = await startTorch(THREADS);
  // Steps per round at batch 32 (fewer at 128, and far fewer for the slow TS loop).
  const plan: Array<{ name: string; run?: Method; steps: number }> = [
    { name: 'fedgate ORT (Trainer: worker, Scan of 16 steps/run)', run: trainer.run, steps: QUICK ? 300 : 800 },
    { name: '  ORT, one session.run per step (not used)', run: naive.run, steps: QUICK ? 100 : 300 },
    { name: `PyTorch CPU (${THREADS} thread)`, run: torch.run, steps: QUICK ? 100 : 300 },
    { name: 'plain TypeScript loop', run: tsMethod(data), steps: QUICK ? 4 : 12 },
  ];
  const samples = plan.map(() => Object.fromEntries(BATCHES.map((B) => [B, [] as number[]])));
  try {
    for (const m of plan) for (const B of BATCHES) if (m.run) await m.run(B, Math.max(1, Math.round(m.steps / 8))); // warm-up
    for (let r = 0; r < ROUNDS; r++) {
      for (const B of BATCHES) {
        for (const [i, m] of plan.entries()) if (m.run) samples[i][B].push(await m.run(B, Math.max(1, Math.round(m.steps / (B / 32)))));
      }
    }
  } finally {
    await trainer.close();
    await naive.close();
    torch.close();
  }
  const ms = plan.map((m, i) => (m.run ? Object.fromEntries(BATCHES.map((B) => [B, median(samples[i][B])])) : undefined));
  const [ortMs, naiveMs, torchMs, tsMs] = ms;
  const tsDiff = await tsVersusOrt(data);

  console.log(`train step, MLP 784-128-10 (ReLU, softmax cross-entropy, plain SGD), ${THREADS} thread for ORT and torch, ms/step`);
  console.log(`median of ${ROUNDS} interleaved rounds; load average at start ${load.map((l) => l.toFixed(2)).join(' ')} on ${os.cpus().length} cores`);
  console.log(`ORT ${ort.env.versions.common}, Node ${process.version}, torch ${torch.version ?? '-'}${torch.blas ? ` (BLAS: ${torch.blas})` : ''}`);
  console.log('');
  const w = Math.max(...plan.map((m) => m.name.length));
  console.log(`${'method'.padEnd(w)}  ${BATCHES.map((B) => `batch ${B}`.padStart(10)).join('  ')}`);
  plan.forEach((m, i) => console.log(`${m.name.padEnd(w)}  ${BATCHES.map((B) => fmt(ms[i]?.[B]).padStart(10)).join('  ')}`));
  const vsTorch = ratio(ortMs!, torchMs);
  const vsTs = ratio(ortMs!, tsMs);
  console.log('');
  if (torch.skipped) console.log(`PyTorch skipped: ${torch.skipped}`);
  if (vsTorch) console.log(`ORT / torch: ${BATCHES.map((B) => `${vsTorch[B]}× @${B}`).join(', ')}   (goal ≤ 0.5×)`);
  if (torch.blas && /\/blas\/libblas/.test(torch.blas)) {
    console.log('warning: torch runs on the reference BLAS (no libopenblas0 installed): its figure is not representative');
  }
  console.log(`ORT / TypeScript: ${BATCHES.map((B) => `${vsTs![B]}× @${B}`).join(', ')}   (TS step matches ORT's to ${tsDiff.toExponential(1)} max abs)`);
  console.log(
    JSON.stringify({
      bench: 'train-step',
      model: '784-128-10',
      threads: THREADS,
      ms_per_step: { ort: round4(ortMs!), ort_one_run_per_step: round4(naiveMs!), torch: torchMs ? round4(torchMs) : null, ts: round4(tsMs!) },
      ratios: { ort_over_torch: vsTorch, ort_over_ts: vsTs },
      torch: torch.skipped ? { skipped: torch.skipped } : { version: torch.version, blas: torch.blas },
    }),
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
