import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMnist, select } from '../agent/data';
import { mlp } from '../agent/model';
import { calibrateTraining } from '../agent/profile';
import { Trainer } from '../agent/train';

describe('calibrateTraining (real Trainer, 784-128-10 MLP)', () => {
  const spec = mlp(784, [128], 10);
  let trainer: Trainer;

  beforeAll(async () => {
    const shard = select(loadMnist('train'), Array.from({ length: 1024 }, (_, i) => i));
    trainer = await Trainer.create(spec);
    await trainer.setData(shard.x, shard.labels);
  });
  afterAll(async () => {
    await trainer?.close();
  });

  it('measures samples per second of compute within the time asked', async () => {
    const t0 = performance.now();
    const cal = await calibrateTraining(trainer, { seconds: 0.5 });
    const wall = (performance.now() - t0) / 1000;
    expect(cal.model).toBe('mlp-784-128-10');
    expect(cal.batchSize).toBe(32);
    expect(Number.isFinite(cal.samplesPerSecond)).toBe(true);
    expect(cal.samplesPerSecond).toBeGreaterThan(1000); // ~60k/s here; a Pi 3 does a few thousand
    expect(cal.samples).toBe(cal.steps * 32);
    expect(cal.seconds).toBeLessThanOrEqual(1.0); // 0.5 s asked; slack for a loaded machine
    expect(wall).toBeLessThan(5);
  });

  it('throttling does not make the hardware look slower (busy time only); a paused trainer fails fast', async () => {
    trainer.setDutyCycle(0.5);
    try {
      const cal = await calibrateTraining(trainer, { seconds: 0.3 });
      expect(cal.samplesPerSecond).toBeGreaterThan(1000);
      trainer.setDutyCycle(0);
      await expect(calibrateTraining(trainer, { seconds: 0.2 })).rejects.toThrow(/paused/);
      // (Pausing in the middle of a run is a race with the first step on a loaded machine; the
      // paused-before case above is the deterministic half of it.)
    } finally {
      trainer.setDutyCycle(1);
    }
  }, 15_000);
});
