import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { loadMnist } from '../agent/data';
import { mlp, paramCount } from '../agent/model';
import { encode } from '../agent/compress';
import { FedAvgStrategy } from '../agent/aggregator';
import { FRAME_HEADER_BYTES } from '../agent/transport';
import { runVirtual, timeToAccuracy, accuracyAt, type VirtualRound } from '../agent/sim/virtual';
import { formatVirtualRound, runVirtualJob } from '../agent/sim/run-virtual';
import { parseTierMix, loadTrace, availabilityWindows, onlineThrough, TIERS, trainFlopsPerSample, type Device } from '../agent/sim/tiers';

const train = loadMnist('train');
const test = { ...loadMnist('test') };
const spec = mlp(784, [16], 10);
const P = paramCount(spec);

function strategy(epochs = 1) {
  return new FedAvgStrategy({ clientsPerRound: 0, epochs, batchSize: 32, lr: 0.1, codec: { codec: 'int8' }, deadlineSeconds: 1000, seed: 3 });
}

describe('virtual clock', () => {
  const tier = { name: 'test', gflops: 1, upBytesPerSecond: 1e5, downBytesPerSecond: 1e6, latencySeconds: 0.1 };

  it('times a task as download + compute + upload from the device model, with real training', async () => {
    const shard = Uint32Array.from({ length: 320 }, (_, i) => i);
    const res = await runVirtual({ spec, train, test, devices: [{ id: 'd0', tier }], shards: [shard], strategy: strategy(), rounds: 2, seed: 1, workers: 1, serverSecondsPerRound: 0.5 });
    const modelBytes = P * 4 + FRAME_HEADER_BYTES + 400;
    const upBytes = encode(new Float32Array(P), { codec: 'int8' }).length + FRAME_HEADER_BYTES + 300;
    const compute = (10 * 32 * trainFlopsPerSample(P)) / 1e9;
    const task = 0.1 + modelBytes / 1e6 + compute + 0.1 + upBytes / 1e5;
    expect(res.rounds).toHaveLength(2);
    expect(res.rounds[0].tasks[0].actualSeconds).toBeCloseTo(task, 9);
    expect(res.rounds[0].end).toBeCloseTo(task + 0.5, 9);
    expect(res.rounds[1].end).toBeCloseTo(2 * (task + 0.5), 9);
    expect(res.rounds[0].stragglerWaitSeconds).toBe(0);
    expect(res.rounds[1].accuracy).toBeGreaterThan(0.3); // real training on 320 images, chance is 0.1
    expect(timeToAccuracy(res.rounds, 0.3)).toBeCloseTo(res.rounds.find((r) => r.accuracy >= 0.3)!.end, 9);
    expect(accuracyAt(res.rounds, task + 0.6)).toBe(res.rounds[0].accuracy);
  }, 60_000);

  it('loses the task of a device that goes offline during it, and keeps the model', async () => {
    const devices: Device[] = [{ id: 'flaky', tier, windows: [[0, 0.05]] }];
    const res = await runVirtual({ spec, train, test, devices, shards: [Uint32Array.from({ length: 64 }, (_, i) => i)], strategy: strategy(), rounds: 1, seed: 1, workers: 1 });
    expect(res.rounds[0].participants).toBe(0);
    expect(res.rounds[0].tasks[0]).toMatchObject({ node: 'flaky', failed: 'offline' });
    expect(res.rounds[0].tasks[0].actualSeconds).toBeCloseTo(0.05, 9);
  }, 60_000);

  // Regression: a device that could not finish by the deadline was late with nothing, round after round.
  it('a device that cannot finish by the deadline sends its partial work, as a real agent does', async () => {
    const slow = { ...tier, name: 'slow', gflops: 0.1 };
    const short = new FedAvgStrategy({ clientsPerRound: 0, epochs: 1, batchSize: 32, lr: 0.1, codec: { codec: 'int8' }, deadlineSeconds: 0.6, seed: 3 });
    const res = await runVirtual({ spec, train, test, devices: [{ id: 'slow', tier: slow }], shards: [Uint32Array.from({ length: 320 }, (_, i) => i)], strategy: short, rounds: 1, seed: 1, workers: 1, serverSecondsPerRound: 0 });
    const down = 0.1 + (P * 4 + FRAME_HEADER_BYTES + 400) / 1e6;
    const up = 0.1 + (encode(new Float32Array(P), { codec: 'int8' }).length + FRAME_HEADER_BYTES + 300) / 1e5;
    const step = (32 * trainFlopsPerSample(P)) / 0.1e9;
    const done = Math.floor((0.9 * 0.6 - down - up) / step); // 0.9 of the deadline, less the transfers
    expect(done).toBe(6);
    expect(res.rounds[0].participants).toBe(1);
    expect(res.rounds[0].tasks[0]).toMatchObject({ node: 'slow', steps: 10, stepsDone: 6, late: false });
    expect(res.rounds[0].tasks[0].actualSeconds).toBeCloseTo(down + done * step + up, 9);
  }, 60_000);

  it('waits for the slowest device under FedAvg: the straggler wait is the gap to it', async () => {
    const slow = { ...tier, name: 'slow', gflops: 0.1 };
    const shards = [0, 1].map((c) => Uint32Array.from({ length: 320 }, (_, i) => c * 320 + i));
    const res = await runVirtual({ spec, train, test, devices: [{ id: 'fast', tier }, { id: 'slow', tier: slow }], shards, strategy: strategy(), rounds: 1, seed: 1, workers: 2, serverSecondsPerRound: 0 });
    const [fast, slw] = res.rounds[0].tasks.map((t) => t.actualSeconds);
    expect(slw - fast).toBeCloseTo((10 * 32 * trainFlopsPerSample(P)) * (1 / 0.1e9 - 1 / 1e9), 9);
    expect(res.rounds[0].end).toBeCloseTo(slw, 9);
    expect(res.rounds[0].stragglerWaitSeconds).toBeCloseTo((slw - fast) / 2, 9);
  }, 60_000);
});

describe('device tiers and traces', () => {
  it('mixes tiers by share, deterministically', () => {
    const mix = parseTierMix('pi3:1,x86:3', 8, 1);
    expect(mix.filter((t) => t.name === 'pi3')).toHaveLength(2);
    expect(mix.filter((t) => t.name === 'x86')).toHaveLength(6);
    expect(parseTierMix('pi3:1,x86:3', 8, 1).map((t) => t.name)).toEqual(mix.map((t) => t.name));
    expect(() => parseTierMix('pi5', 4, 1)).toThrow('unknown tier "pi5"');
    expect(() => parseTierMix('pi3:-1', 4, 1)).toThrow('must be a number above 0');
  });

  it('builds availability windows with the tier\'s on/off means', () => {
    const w = availabilityWindows(TIERS.pi3, 1e7, 5)!;
    const online = w.reduce((s, [a, b]) => s + b - a, 0) / 1e7;
    expect(online).toBeGreaterThan(0.8); // 3600 / (3600 + 600) = 0.857
    expect(online).toBeLessThan(0.92);
    expect(availabilityWindows(TIERS.x86, 1e7, 5)).toBeUndefined();
    expect(onlineThrough({ id: 'x', tier: TIERS.pi3, windows: [[0, 10]] }, 2, 9)).toBe(true);
    expect(onlineThrough({ id: 'x', tier: TIERS.pi3, windows: [[0, 10]] }, 2, 11)).toBe(false);
  });

  it('reads a trace file, with tier defaults and clear errors', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-trace-'));
    const file = path.join(dir, 'fleet.json');
    writeFileSync(file, JSON.stringify({ devices: [{ id: 'a', gflops: 2, upMbps: 8, downMbps: 16, latencyMs: 50, availability: [[0, 50], [100, 200]] }, { id: 'b', tier: 'pi4', gflops: 3 }] }));
    const [a, b] = loadTrace(file);
    expect(a).toEqual({ id: 'a', tier: { name: 'trace', gflops: 2, upBytesPerSecond: 1e6, downBytesPerSecond: 2e6, latencySeconds: 0.05 }, windows: [[0, 50], [100, 200]] });
    expect(b.tier.gflops).toBe(3);
    expect(b.tier.upBytesPerSecond).toBeCloseTo(TIERS.pi4.upBytesPerSecond, 6);
    writeFileSync(file, JSON.stringify({ devices: [{ id: 'a', upMbps: 1, downMbps: 1, latencyMs: 1 }] }));
    expect(() => loadTrace(file)).toThrow('devices[0].gflops: must be a number above 0 (or give a tier)');
    writeFileSync(file, JSON.stringify({ devices: [{ tier: 'x86', availability: [[5, 1]] }] }));
    expect(() => loadTrace(file)).toThrow(`trace ${file}: devices[0]: availability[0] [5, 1] is empty: its start must be below its end`);
    writeFileSync(file, '{"devices": []}');
    expect(() => loadTrace(file)).toThrow('non-empty array');
    expect(() => loadTrace(path.join(dir, 'missing.json'))).toThrow('cannot read trace');
  });

  // Regression: unknown keys were ignored without a word, and a link of 0 Mbit/s passed (gflops 0 did not).
  it.each([
    [{ devices: [{ id: 'a', tier: 'x86', typo: 3 }] }, 'devices[0] (a): unknown key "typo"; a device has id, tier, gflops, upMbps, downMbps, latencyMs, availability'],
    [{ devices: [{ id: 'a', tier: 'x86' }, { tier: 'x86', upMpbs: 1, windows: [] }] }, 'devices[1]: unknown keys "upMpbs", "windows"; a device has id, tier, gflops, upMbps, downMbps, latencyMs, availability'],
    [{ devices: [{ id: 'a', tier: 'x86' }], device: [] }, 'unknown key "device"; a trace has only "devices"'],
    [{ devices: [{ id: 'a', tier: 'x86', gflops: 0 }] }, 'devices[0].gflops: must be a number above 0'],
    [{ devices: [{ id: 'a', tier: 'x86', upMbps: 0 }] }, 'devices[0].upMbps: must be a number above 0'],
    [{ devices: [{ id: 'a', tier: 'pi3', downMbps: 0 }] }, 'devices[0].downMbps: must be a number above 0'],
    [{ devices: [{ id: 'a', tier: 'x86', latencyMs: -1 }] }, 'devices[0].latencyMs: must be a number ≥ 0'],
    [{ devices: [null] }, 'devices[0]: must be an object with an id and a tier or gflops, upMbps, downMbps, latencyMs'],
  ])('refuses the trace %j', (trace, why) => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'fg-trace-')), 'fleet.json');
    writeFileSync(file, JSON.stringify(trace));
    expect(() => loadTrace(file)).toThrow(`trace ${file}: ${why}`);
  });

  // Regression: overlapping, unsorted, negative and empty windows were taken without a word (unsorted
  // ones sorted, overlapping ones kept, so a device was "online" twice over).
  it.each([
    [[[0, 3600], [1000, 5000]], 'devices[0] (gw-a): availability[1] [1000, 5000] overlaps availability[0] [0, 3600]: windows must not overlap (merge them into one)'],
    [[[100, 200], [0, 50]], 'devices[0] (gw-a): availability[1] [0, 50] starts before availability[0] [100, 200]: list the windows in order of start'],
    [[[-100, 50]], 'devices[0] (gw-a): availability[0] [-100, 50] starts before 0 (windows are seconds from the start of the run)'],
    [[[0, 10], [20, 20]], 'devices[0] (gw-a): availability[1] [20, 20] is empty: its start must be below its end'],
    [[[30, 10]], 'devices[0] (gw-a): availability[0] [30, 10] is empty: its start must be below its end'],
    [[[0, 10], [5]], 'devices[0] (gw-a): availability[1] [5] must be [start, end], two numbers of seconds'],
    [{ from: 0 }, 'devices[0] (gw-a): availability must be an array of [start, end] pairs'],
  ])('refuses the availability %j, naming the device and the window', (availability, why) => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'fg-trace-')), 'fleet.json');
    writeFileSync(file, JSON.stringify({ devices: [{ id: 'gw-a', tier: 'x86', availability }] }));
    expect(() => loadTrace(file)).toThrow(`trace ${file}: ${why}`);
  });

  it('names the device by its place when it has no id yet, and merges back-to-back windows', () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'fg-trace-')), 'fleet.json');
    writeFileSync(file, JSON.stringify({ devices: [{ id: 'a', tier: 'x86' }, { tier: 'x86', availability: [[0, 10], [5, 20]] }] }));
    expect(() => loadTrace(file)).toThrow(`trace ${file}: devices[1]: availability[1] [5, 20] overlaps availability[0] [0, 10]: windows must not overlap (merge them into one)`);
    writeFileSync(file, JSON.stringify({ devices: [{ id: 'a', tier: 'x86', availability: [[0, 10], [10, 20], [30, 40]] }] }));
    const [a] = loadTrace(file);
    expect(a.windows).toEqual([[0, 20], [30, 40]]);
    expect(onlineThrough(a, 5, 15)).toBe(true); // a task across the seam is not lost
  });

  // Regression: pi3:25,pi3:25 gave the pi3s two slices of the mix without a word.
  it('refuses a tier named twice, naming it and its whole share', () => {
    expect(() => parseTierMix('pi3:25,pi3:25', 8, 1)).toThrow('--tiers names tier "pi3" twice: name each tier once, with its whole share (pi3:50)');
    expect(() => parseTierMix('pi3,x86,pi3,pi3', 8, 1)).toThrow('--tiers names tier "pi3" 3 times: name each tier once, with its whole share (pi3:3)');
    expect(parseTierMix('pi3:50,x86:50', 4, 1).map((t) => t.name).sort()).toEqual(['pi3', 'pi3', 'x86', 'x86']);
  });

  // Regression: --trace with --tiers silently dropped the tiers.
  it('runVirtualJob refuses a trace and tiers together', async () => {
    await expect(runVirtualJob({ dataset: 'mnist', clients: 10, partition: 'iid', hidden: [16], strategy: 'fedavg', codec: { codec: 'int8' }, clientsPerRound: 0, epochs: 1, batchSize: 32, lr: 0.1, deadlineSeconds: 10, seed: 1, rounds: 1, trace: 'fleet.json', tiers: 'pi3,x86' }, () => {}))
      .rejects.toThrow('--trace and --tiers: give one, not both (the trace fleet.json names each device and its figures; --tiers draws --clients devices from the built-in tiers)');
  });

  it('takes a latency of 0', () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'fg-trace-')), 'fleet.json');
    writeFileSync(file, JSON.stringify({ devices: [{ id: 'a', tier: 'x86', latencyMs: 0 }] }));
    expect(loadTrace(file)[0].tier.latencySeconds).toBe(0);
  });
});

describe('formatVirtualRound', () => {
  const r: VirtualRound = { round: 7, start: 0, end: 12.25, participants: 1, selected: 2, accuracy: 0.5, loss: 1, stragglerWaitSeconds: 0, bytesUp: 0, bytesDown: 0, deadlineSeconds: 3, tasks: [] };
  it('shows the round of the total, or the round alone when only a time budget ends the run', () => {
    expect(formatVirtualRound(r, 20)).toMatch(/^round  7\/20  t=12\.3 s  participants 1\/2  /);
    expect(formatVirtualRound(r, Infinity)).toMatch(/^round 7  t=12\.3 s  participants 1\/2  /);
  });
});
