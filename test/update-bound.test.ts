import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Aggregator, FedAvgStrategy } from '../agent/aggregator';
import { checkUpdate, MAX_UPDATE_MAGNITUDE, UpdateRejected } from '../agent/aggregator/validate';
import type { ClientUpdate } from '../agent/aggregator/fedavg';
import { encode } from '../agent/compress';
import { initParams, mlp } from '../agent/model';
import { FrameKind, Topics, encodeFrames, type UpdateMeta } from '../agent/transport';
import { startAedes, type TestBroker } from './helpers/brokers';
import { fakeNode as fakeNodeOf } from './helpers/fake-node';

/**
 * The aggregator refuses an update whose values are absurd even though finite (beyond ±1e6).
 * Regression: gw-0's update carried 1e30 (a corrupt error-feedback residual); the aggregator folded
 * it into the global model (loss 7.57e+30), and the next round every gateway's training diverged.
 */
const F1E30 = Math.fround(1e30);
const want = { round: 3, paramCount: 4, selected: new Set(['gw-0']) };
const update = (delta: number[]): ClientUpdate => ({ node: 'gw-0', round: 3, samples: 10, steps: 2, loss: 0.5, delta: Float32Array.from(delta) });

describe('checkUpdate: the bound on an update value', () => {
  it('is 1e6: values of exactly ±1e6 pass', () => {
    expect(MAX_UPDATE_MAGNITUDE).toBe(1e6);
    const u = update([1e6, -1e6, 0, 0.25]);
    expect(checkUpdate(u, want)).toBe(u);
  });

  it('refuses a value beyond it, naming the node, the value and its index', () => {
    expect(() => checkUpdate(update([0, 0, -1000001, 0]), want)).toThrow(
      new UpdateRejected('update from gw-0 has value -1000001 at index 2, beyond ±1000000 (the bound on any update value)'));
    expect(() => checkUpdate(update([1e30, 0, 0, 0]), want)).toThrow(
      new UpdateRejected(`update from gw-0 has value ${F1E30} at index 0, beyond ±1000000 (the bound on any update value)`));
    expect(() => checkUpdate(update([0, 3.4e38, 0, 0]), want)).toThrow(UpdateRejected);
  });

  it('non-finite values are still refused as such first', () => {
    expect(() => checkUpdate(update([1e30, Infinity, 0, 0]), want)).toThrow(new UpdateRejected('update from gw-0 has a non-finite value (Infinity) at index 1'));
  });
});

const spec = mlp(4, [3], 2);
const topics = new Topics('fedgate', 'bound');

/** A node that answers every task with `delta`. */
const fakeNode = (url: string, id: string, delta: Float32Array) => fakeNodeOf(url, topics, id, async (task, c) => {
  const meta: UpdateMeta = { round: task.round, taskId: task.taskId, node: id, samples: 100, steps: 3, loss: 0.5, trainSeconds: 0.1, paramCount: delta.length, codec: 'none', stoppedEarly: false };
  for (const f of encodeFrames(FrameKind.Update, meta as unknown as Record<string, unknown>, encode(delta, { codec: 'none' }), 64 * 1024)) await c.publishAsync(topics.nodeUpdate(id), f, { qos: 1 });
});

describe('the aggregator refuses an absurd but finite update (aedes)', () => {
  let broker: TestBroker;
  beforeAll(async () => { broker = await startAedes(); });
  afterAll(async () => { await broker?.close(); });

  it('records "update rejected: …" for that node and aggregates the others alone', async () => {
    const initial = initParams(spec, 1);
    const good = Float32Array.from({ length: initial.length }, (_, i) => (i % 5) * 0.01);
    const absurd = good.slice();
    absurd.fill(1e30, 0, 3); // the first values of a corrupt residual, finite
    const clients = [await fakeNode(broker.url, 'gw-good', good), await fakeNode(broker.url, 'gw-big', absurd)];
    const agg = new Aggregator({
      url: broker.url, topics, spec, initialParams: initial, rounds: 1, minClients: 2, waitForClientsSeconds: 10, seed: 1, graceSeconds: 1,
      strategy: new FedAvgStrategy({ clientsPerRound: 0, epochs: 1, batchSize: 10, lr: 0.1, codec: { codec: 'none' }, deadlineSeconds: 30, seed: 1 }),
    });
    try {
      const t0 = Date.now();
      const res = await agg.run();
      const r = res.rounds[0];
      expect(r.participants).toBe(1);
      expect(r.failures).toEqual([{
        node: 'gw-big', reason: `update rejected: update from gw-big has value ${F1E30} at index 0, beyond ±1000000 (the bound on any update value)`, elapsedSeconds: expect.any(Number),
      }]);
      expect(Date.now() - t0).toBeLessThan(15_000); // closed on the rejection, not at the 30 s deadline
      // FedAvg of the good update alone: exactly global + delta.
      expect(Array.from(res.params)).toEqual(Array.from(initial.map((x, i) => Math.fround(x + good[i]))));
    } finally {
      await agg.stop();
      await Promise.all(clients.map((c) => c.endAsync()));
    }
  }, 30_000);
});
