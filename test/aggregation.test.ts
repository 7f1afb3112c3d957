import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fedAvg, weightedMeanDelta, dedupeUpdates, applyDelta, checkUpdate, UpdateRejected, saveCheckpoint, loadCheckpoint, FedAvgStrategy, localSteps, sampleWithoutReplacement, type ClientUpdate, type NodeInfo } from '../agent/aggregator';

const u = (node: string, samples: number, delta: number[], round = 1): ClientUpdate => ({ node, round, samples, steps: 1, loss: 0, delta: Float32Array.from(delta) });

describe('FedAvg', () => {
  it('weights deltas by sample count', () => {
    const global = Float32Array.from([1, 1]);
    // (100·[1,0] + 300·[0,2]) / 400 = [0.25, 1.5]
    expect(Array.from(fedAvg(global, [u('a', 100, [1, 0]), u('b', 300, [0, 2])])!)).toEqual([1.25, 2.5]);
  });

  it('counts a duplicated update (same node and round) once', () => {
    const global = Float32Array.from([0]);
    const a = u('a', 100, [1]);
    // with the duplicate counted twice the result would be (2·100·1 + 100·4)/300 = 2
    expect(Array.from(fedAvg(global, [a, a, u('b', 100, [4])])!)).toEqual([2.5]);
    expect(dedupeUpdates([a, { ...a, round: 2 }, a])).toHaveLength(2);
  });

  it('returns undefined for zero total weight or no updates (the caller keeps its model)', () => {
    expect(fedAvg(Float32Array.from([1]), [u('a', 0, [5]), u('b', 0, [7])])).toBeUndefined();
    expect(fedAvg(Float32Array.from([1]), [])).toBeUndefined();
  });

  it('refuses negative or non-finite weights and mismatched shapes', () => {
    expect(() => weightedMeanDelta([Float32Array.from([1])], [-1])).toThrow('non-negative');
    expect(() => weightedMeanDelta([Float32Array.from([1])], [NaN])).toThrow('finite');
    expect(() => weightedMeanDelta([Float32Array.from([1]), Float32Array.from([1, 2])], [1, 1])).toThrow('has 2 values');
  });

  it('never produces a non-finite model', () => {
    expect(() => applyDelta(Float32Array.from([3e38]), Float32Array.from([3e38]))).toThrow('non-finite value at index 0');
  });
});

describe('update checks', () => {
  const want = { round: 4, paramCount: 3, selected: new Set(['a']) };
  const good = u('a', 10, [0, 1, 2], 4);
  it('passes a good update', () => expect(checkUpdate(good, want)).toBe(good));
  it.each([
    [{ ...good, round: 3 }, 'round 3, the current round is 4'],
    [{ ...good, node: 'b' }, 'not selected'],
    [{ ...good, delta: Float32Array.from([1, 2]) }, 'has 2 values, the model has 3'],
    [{ ...good, delta: Float32Array.from([1, NaN, 2]) }, 'non-finite value (NaN) at index 1'],
    [{ ...good, delta: Float32Array.from([1, 2, -Infinity]) }, 'non-finite value (-Infinity) at index 2'],
    [{ ...good, samples: -1 }, 'claims -1 samples'],
    [{ ...good, delta: Float64Array.from([1, 2, 3]) as unknown as Float32Array }, 'not float32'],
  ])('rejects %#', (bad, msg) => {
    expect(() => checkUpdate(bad as ClientUpdate, want)).toThrow(UpdateRejected);
    expect(() => checkUpdate(bad as ClientUpdate, want)).toThrow(msg);
  });
});

describe('checkpoints', () => {
  it('round-trips params and state exactly, atomically replacing the old one', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-ckpt-'));
    const file = path.join(dir, 'ckpt.bin');
    await saveCheckpoint(file, { round: 1, params: Float32Array.from([1]), state: { a: 1 } });
    const params = Float32Array.from([0.1, -2.5, 3e-8, 7]);
    await saveCheckpoint(file, { round: 5, params, state: { history: [1, 2] } });
    const back = await loadCheckpoint(file);
    expect(back.round).toBe(5);
    expect(Array.from(back.params)).toEqual(Array.from(params));
    expect(back.state).toEqual({ history: [1, 2] });
  });

  it('detects corruption and foreign files with a clear error', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-ckpt-'));
    const file = path.join(dir, 'ckpt.bin');
    await saveCheckpoint(file, { round: 2, params: Float32Array.from([1, 2, 3]), state: {} });
    const buf = readFileSync(file);
    buf[buf.length - 6] ^= 0xff;
    writeFileSync(file, buf);
    await expect(loadCheckpoint(file)).rejects.toThrow('corrupted');
    writeFileSync(file, 'hello world, not a checkpoint');
    await expect(loadCheckpoint(file)).rejects.toThrow('not a fedgate checkpoint');
    await expect(loadCheckpoint(path.join(dir, 'missing.bin'))).rejects.toThrow('ENOENT');
  });
});

describe('FedAvg strategy planning', () => {
  const node = (id: string, samples: number): NodeInfo => ({ id, online: true, session: 1, samples, busy: false, lastSeen: 0 });
  const opts = { clientsPerRound: 0, epochs: 5, batchSize: 32, lr: 0.1, codec: { codec: 'int8' as const }, deadlineSeconds: 60, seed: 1 };

  it('asks every live node with data for the same epochs', () => {
    const plan = new FedAvgStrategy(opts).plan(1, [node('a', 100), node('b', 64), node('c', 0)]);
    expect(plan.tasks.map((t) => [t.node, t.steps])).toEqual([['a', 20], ['b', 10]]);
    expect(plan.deadlineSeconds).toBe(60);
    expect(localSteps(100, 32, 5)).toBe(20);
  });

  it('samples K distinct nodes, reproducibly per seed and round', () => {
    const fleet = Array.from({ length: 20 }, (_, i) => node(`n${i}`, 10));
    const s = new FedAvgStrategy({ ...opts, clientsPerRound: 5 });
    const a = s.plan(3, fleet).tasks.map((t) => t.node);
    expect(new Set(a).size).toBe(5);
    expect(s.plan(3, fleet).tasks.map((t) => t.node)).toEqual(a);
    expect(s.plan(4, fleet).tasks.map((t) => t.node)).not.toEqual(a);
    expect(sampleWithoutReplacement([1, 2, 3], 5, 1)).toEqual([1, 2, 3]);
  });
});

describe('fleet liveness', () => {
  it('a retained "online" state alone does not make a node live: it must be heard from', async () => {
    const { Fleet } = await import('../agent/aggregator');
    let now = 1000;
    const fleet = new Fleet(30_000, () => now);
    fleet.onState({ online: true, node: 'ghost', session: 1, samples: 1e12, ts: 1 }, { retained: true });
    expect(fleet.live()).toEqual([]);
    fleet.onHeartbeat({ node: 'ghost', session: 1, ts: 2 });
    expect(fleet.live().map((n) => n.id)).toEqual(['ghost']);
    now += 30_001; // silent for longer than the liveness window
    expect(fleet.live()).toEqual([]);
    // A live birth counts at once; a stale state from an older session is ignored.
    fleet.onState({ online: true, node: 'real', session: 5, samples: 10, ts: 3 });
    fleet.onState({ online: false, node: 'real', session: 4, samples: 10, ts: 4 });
    expect(fleet.live().map((n) => n.id)).toEqual(['real']);
  });
});
