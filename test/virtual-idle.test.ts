import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { loadMnist } from '../agent/data';
import { mlp, paramCount } from '../agent/model';
import { encode } from '../agent/compress';
import { FedAvgStrategy } from '../agent/aggregator';
import { FRAME_HEADER_BYTES } from '../agent/transport';
import { runVirtual } from '../agent/sim/virtual';
import { runVirtualJob, formatVirtualIdle, type VirtualJobOptions } from '../agent/sim/run-virtual';
import { isOnline, nextOnline, trainFlopsPerSample, type Device } from '../agent/sim/tiers';

// Regression: with no device online the clock crept on by the server's 0.5 s a round, evaluating and
// printing an empty round each time (2180 lines for 1095 simulated seconds of a night offline).
const train = loadMnist('train');
const test = loadMnist('test');
const spec = mlp(784, [16], 10);
const P = paramCount(spec);
const tier = { name: 'test', gflops: 1, upBytesPerSecond: 1e5, downBytesPerSecond: 1e6, latencySeconds: 0.1 };
const shard = (c: number) => Uint32Array.from({ length: 64 }, (_, i) => c * 64 + i);
const fedavg = () => new FedAvgStrategy({ clientsPerRound: 0, epochs: 1, batchSize: 32, lr: 0.1, codec: { codec: 'int8' }, deadlineSeconds: 1000, seed: 3 });
// A task on `tier` with 64 rows: latency + model down, 2 steps of 32, latency + int8 update up.
const task = 0.1 + (P * 4 + FRAME_HEADER_BYTES + 400) / 1e6 + (64 * trainFlopsPerSample(P)) / 1e9 + 0.1 + (encode(new Float32Array(P), { codec: 'int8' }).length + FRAME_HEADER_BYTES + 300) / 1e5;

describe('virtual clock over idle stretches', () => {
  it('jumps to the next time a device is online, with no round in between, and ends when none ever is again', async () => {
    const devices: Device[] = [
      { id: 'a', tier, windows: [[0, 5]] },
      { id: 'b', tier, windows: [[0, 5], [3000, 3010]] },
    ];
    const seen: string[] = [];
    const res = await runVirtual({ spec, train, test, devices, shards: [shard(0), shard(1)], strategy: fedavg(), rounds: Infinity, timeBudgetSeconds: 3600, seed: 1, workers: 1, serverSecondsPerRound: 0.5, onIdle: (i) => seen.push(`${i.until} ${i.from.toFixed(3)}`) });
    const T = task + 0.5; // a round
    expect(T).toBeCloseTo(0.889, 3);
    // [0, 5): 6 whole rounds (the 6th ends at 5.334); the next would start after the windows closed.
    const first = res.rounds.filter((r) => r.start < 5);
    expect(first).toHaveLength(6);
    first.forEach((r, k) => expect(r.start).toBeCloseTo(k * T, 9));
    expect(first.every((r) => r.participants === 2)).toBe(true);
    // Then straight to 3000: b alone, 11 whole rounds and a 12th that starts at 3009.78 and is lost
    // at 3010. Regression: FedAvg was offered the offline a too (the real aggregator plans over live
    // nodes only) and spent a pick on it every round.
    const second = res.rounds.slice(6);
    expect(second).toHaveLength(12);
    second.forEach((r, k) => expect(r.start).toBeCloseTo(3000 + k * T, 6));
    expect(second.slice(0, 11).every((r) => r.participants === 1 && r.selected === 1)).toBe(true);
    expect(second[11]).toMatchObject({ participants: 0, selected: 1 });
    expect(second[11].tasks.map((t) => [t.node, t.failed])).toEqual([['b', 'offline']]);
    expect(second[11].end).toBeCloseTo(3010.5, 9);
    // Round numbers run on across the gap: nothing was evaluated or counted for it.
    expect(res.rounds.map((r) => r.round)).toEqual(Array.from({ length: 18 }, (_, i) => i + 1));
    expect(res.idle).toHaveLength(2);
    expect(res.idle[0]).toMatchObject({ to: 3000, until: 'online' });
    expect(res.idle[0].from).toBeCloseTo(6 * T, 9);
    expect(res.idle[1]).toMatchObject({ until: 'never' });
    expect(res.idle[1].to).toBeUndefined();
    expect(res.idle[1].from).toBeCloseTo(3010.5, 9);
    expect(seen).toEqual(['online 5.334', 'never 3010.500']);
  }, 60_000);

  it('jumps to the time budget\'s end, and stops, when no device comes online before it', async () => {
    const devices: Device[] = [{ id: 'a', tier, windows: [[0, 1], [5000, 6000]] }];
    const res = await runVirtual({ spec, train, test, devices, shards: [shard(0)], strategy: fedavg(), rounds: Infinity, timeBudgetSeconds: 3600, seed: 1, workers: 1, serverSecondsPerRound: 0.5 });
    // Round 1 (0 → 0.889) fits, round 2 is lost at 1 and ends at 1.5.
    expect(res.rounds.map((r) => r.participants)).toEqual([1, 0]);
    expect(res.rounds[1].end).toBeCloseTo(1.5, 9);
    expect(res.idle).toHaveLength(1);
    expect(res.idle[0]).toMatchObject({ to: 3600, until: 'budget' });
    expect(res.idle[0].from).toBeCloseTo(1.5, 9);
  }, 60_000);

  it('a round limit still counts only real rounds, and a device without data does not keep the clock crawling', async () => {
    const devices: Device[] = [
      { id: 'a', tier, windows: [[0, 1], [100, 200]] },
      { id: 'empty', tier }, // always online, but holds no rows: never asked
    ];
    const res = await runVirtual({ spec, train, test, devices, shards: [shard(0), new Uint32Array(0)], strategy: fedavg(), rounds: 3, seed: 1, workers: 1, serverSecondsPerRound: 0.5 });
    expect(res.rounds.map((r) => [r.round, r.participants])).toEqual([[1, 1], [2, 0], [3, 1]]);
    expect(res.rounds[2].start).toBe(100);
    expect(res.idle).toHaveLength(1);
    expect(res.idle[0]).toMatchObject({ to: 100, until: 'online' });
  }, 60_000);

  it('a fleet online at the start of each stretch runs as before (no idle stretch)', async () => {
    const res = await runVirtual({ spec, train, test, devices: [{ id: 'a', tier }], shards: [shard(0)], strategy: fedavg(), rounds: 3, seed: 1, workers: 1, serverSecondsPerRound: 0.5 });
    expect(res.idle).toEqual([]);
    res.rounds.forEach((r, k) => expect(r.start).toBeCloseTo(k * (task + 0.5), 9));
  }, 60_000);

  it('windows are [start, end): online at the start, not at the end', () => {
    const d: Device = { id: 'a', tier, windows: [[0, 5], [3000, 3010]] };
    expect([0, 4.999, 5, 2999, 3000, 3010].map((t) => isOnline(d, t))).toEqual([true, true, false, false, true, false]);
    expect([0, 3, 5, 3000, 3005, 3010].map((t) => nextOnline(d, t))).toEqual([0, 3, 3000, 3000, 3005, undefined]);
    expect(nextOnline({ id: 'x', tier }, 42)).toBe(42);
    expect(nextOnline({ id: 'x', tier, windows: [] }, 0)).toBeUndefined();
  });

  it('prints one line per idle stretch, and says when the run ends for want of a device', () => {
    expect(formatVirtualIdle({ from: 5.5, to: 3000, until: 'online' })).toBe('idle from t=5.5 s to t=3000.0 s: no device online');
    expect(formatVirtualIdle({ from: 1.5, to: 3600, until: 'budget' })).toBe('idle from t=1.5 s to t=3600.0 s (the time budget\'s end): no device online before it; the run ends');
    expect(formatVirtualIdle({ from: 3010.5, until: 'never' })).toBe('idle from t=3010.5 s: no device comes online again; the run ends');
  });
});

describe('runVirtualJob over a trace with an idle stretch', () => {
  const base: VirtualJobOptions = {
    dataset: 'mnist', clients: 10, partition: 'iid', hidden: [16], maxSamples: 64, strategy: 'fedavg', codec: { codec: 'int8' },
    clientsPerRound: 0, epochs: 1, batchSize: 32, lr: 0.1, deadlineSeconds: 1000, seed: 1, rounds: Infinity, timeBudgetSeconds: 3600,
  };
  const traceFile = (devices: unknown[]) => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'fg-idle-')), 'fleet.json');
    writeFileSync(file, JSON.stringify({ devices }));
    return file;
  };
  // gflops 1, 0.8/8 Mbit/s = 1e5/1e6 B/s, 100 ms: the `tier` above.
  const dev = (id: string, availability: number[][]) => ({ id, gflops: 1, upMbps: 0.8, downMbps: 8, latencyMs: 100, availability });

  it('runs the reviewer\'s trace in seconds: 18 rounds, one line for the night, one for the end', async () => {
    const trace = traceFile([dev('a', [[0, 5]]), dev('b', [[0, 5], [3000, 3010]])]);
    const notes: string[] = [];
    const started = Date.now();
    // clientsPerRound 2: both, as above (0 would be 10 % of the fleet, 1 device).
    const res = await runVirtualJob({ ...base, clientsPerRound: 2, trace }, () => {}, (l) => notes.push(l));
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(res.rounds).toHaveLength(18);
    expect(res.idle.map((i) => i.until)).toEqual(['online', 'never']);
    expect(notes).toEqual(['idle from t=5.3 s to t=3000.0 s: no device online', 'idle from t=3010.5 s: no device comes online again; the run ends']);
  }, 60_000);

  it('a trace whose devices are never online in the budget fails as a run nobody took part in', async () => {
    const trace = traceFile([dev('a', [[5000, 6000]]), dev('b', [])]);
    const notes: string[] = [];
    await expect(runVirtualJob({ ...base, trace }, () => {}, (l) => notes.push(l))).rejects.toThrow(`no device was online before the run ended: check the devices' availability windows in ${trace} (no report written)`);
    expect(notes).toEqual(['idle from t=0.0 s to t=3600.0 s (the time budget\'s end): no device online before it; the run ends']);
  }, 60_000);
});
