import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { simulate, type SimulateOptions } from '../agent/sim';
import { loadCheckpoint } from '../agent/aggregator';
import { loadMnist, select } from '../agent/data';
import { paramCount, mlp } from '../agent/model';
import { startAedes, startMosquitto, mosquittoMissing, type TestBroker } from './helpers/brokers';

const missing = mosquittoMissing();
const brokers: [string, () => Promise<TestBroker>][] = [['aedes', startAedes]];
if (!missing) brokers.push(['mosquitto', () => startMosquitto()]);
else it.skip(`mosquitto: ${missing}`, () => undefined);

const PARAMS = paramCount(mlp(784, [32], 10));

function options(dir: string, url: string, over: Partial<SimulateOptions> = {}): SimulateOptions {
  return {
    broker: url, prefix: 'fedgate', fleet: `it-${Math.random().toString(36).slice(2, 8)}`, dataset: 'mnist', hidden: [32],
    rounds: 3, clients: 3, clientsPerRound: 0, epochs: 1, batchSize: 32, lr: 0.1, codec: { codec: 'int8' },
    deadlineSeconds: 60, seed: 7, partition: 'dirichlet:0.5', maxSamples: 1500, logLevel: 'warn', waitForClientsSeconds: 60,
    checkpoint: path.join(dir, 'ckpt.bin'), modelOut: path.join(dir, 'model.onnx'), report: path.join(dir, 'report.json'),
    ...over,
  };
}

describe.each(brokers)('a short federated job over %s', (_name, start) => {
  let broker: TestBroker;
  beforeAll(async () => { broker = await start(); });
  afterAll(async () => { await broker?.close(); });

  it('trains a real model across 3 gateway processes, reports, checkpoints and exports it', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-fed-'));
    const lines: number[] = [];
    // Plain FedAvg here: every task gets its full work and a generous deadline, so counts are exact.
    const report = await simulate(options(dir, broker.url, { strategy: 'fedavg' }), (r) => lines.push(r.round));
    expect(lines).toEqual([1, 2, 3]);
    expect(report.rounds.map((r) => [r.round, r.participants, r.selected]), JSON.stringify(report.rounds.map((r) => r.failures))).toEqual([[1, 3, 3], [2, 3, 3], [3, 3, 3]]);
    // 10 classes: chance is 0.1; three short rounds on 4500 images reach far above it.
    expect(report.final!.accuracy).toBeGreaterThan(0.6);
    expect(report.rounds[2].accuracy!).toBeGreaterThan(report.rounds[0].accuracy! - 0.02);
    for (const r of report.rounds) {
      // Down: the float32 model to each of the 3 nodes, plus frame headers and task metadata.
      expect(r.bytesDown).toBeGreaterThan(3 * PARAMS * 4);
      expect(r.bytesDown).toBeLessThan(3 * PARAMS * 4 + 3 * 2 * 1024);
      // Up: int8 updates, about a quarter of float32 plus block scales.
      expect(r.bytesUp).toBeGreaterThan(3 * PARAMS);
      expect(r.bytesUp).toBeLessThan(3 * PARAMS * 1.1 + 3 * 2 * 1024);
      expect(r.tasks.every((t) => !t.late && t.stepsDone === t.steps)).toBe(true);
    }

    const written = JSON.parse(readFileSync(path.join(dir, 'report.json'), 'utf8'));
    expect(written.final).toEqual(report.final);
    expect(written.rounds).toHaveLength(3);
    expect(written.config).toMatchObject({ rounds: 3, clients: 3, partition: 'dirichlet:0.5', seed: 7, strategy: 'fedavg' });
    expect(Object.keys(written.rounds[0])).toEqual(expect.arrayContaining(['round', 'participants', 'accuracy', 'loss', 'bytesUp', 'bytesDown', 'seconds']));

    const ckpt = await loadCheckpoint<{ rounds: unknown[] }>(path.join(dir, 'ckpt.bin'));
    expect(ckpt.round).toBe(3);
    expect(ckpt.params).toHaveLength(PARAMS);
    expect(ckpt.state.rounds).toHaveLength(3);

    // The exported .onnx is a standalone model: ONNX Runtime loads it and gives the reported accuracy.
    const session = await ort.InferenceSession.create(path.join(dir, 'model.onnx'));
    const test = loadMnist('test');
    const all = select(test, Uint32Array.from({ length: test.n }, (_, i) => i));
    const out = await session.run({ x: new ort.Tensor('float32', all.x, [test.n, 784]) });
    const logits = out.logits.data as Float32Array;
    let correct = 0;
    for (let i = 0; i < test.n; i++) {
      let best = 0;
      for (let c = 1; c < 10; c++) if (logits[i * 10 + c] > logits[i * 10 + best]) best = c;
      if (best === all.labels[i]) correct++;
    }
    expect(correct / test.n).toBeCloseTo(report.final!.accuracy, 6);
  }, 180_000);

  it('resumes from its checkpoint and continues with the next round', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-resume-'));
    const first = await simulate(options(dir, broker.url, { rounds: 1, modelOut: undefined }));
    expect(first.rounds).toHaveLength(1);
    const second = await simulate(options(dir, broker.url, { rounds: 2, resume: true, modelOut: undefined }));
    expect(second.rounds.map((r) => r.round)).toEqual([1, 2]);
    expect(second.rounds[0]).toEqual(first.rounds[0]);
    expect((await loadCheckpoint(path.join(dir, 'ckpt.bin'))).round).toBe(2);
  }, 180_000);
});

describe('over-commitment over a real broker', () => {
  let broker: TestBroker;
  beforeAll(async () => { broker = await startAedes(); });
  afterAll(async () => { await broker?.close(); });

  it('asks 3 gateways, closes each round at K = 2 results, records the third as late', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-oc-'));
    const report = await simulate(options(dir, broker.url, { rounds: 2, clientsPerRound: 2, overcommit: 1.5, maxSamples: 600, modelOut: undefined }));
    for (const r of report.rounds) {
      expect(r.selected).toBe(3);
      expect(r.participants).toBe(2);
      expect(r.tasks.filter((t) => t.late)).toHaveLength(1);
      expect(r.failures).toHaveLength(1);
    }
    expect(report.final!.accuracy).toBeGreaterThan(0.3);
  }, 120_000);
});

describe('simulate refuses what cannot work', () => {
  let broker: TestBroker;
  beforeAll(async () => { broker = await startAedes(); });
  afterAll(async () => { await broker?.close(); });

  it('fails at once on a bad partition spec, before starting any gateway', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-bad-'));
    await expect(simulate(options(dir, broker.url, { partition: 'dirichlet:-1' }))).rejects.toThrow('invalid partition "dirichlet:-1": alpha must be a finite number > 0');
  });

  it('fails promptly when a gateway cannot start, instead of waiting for it', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-bad-'));
    const t0 = Date.now();
    // MNIST has no owner column: every gateway refuses the "owner" partition and exits 1.
    await expect(simulate(options(dir, broker.url, { partition: 'owner', waitForClientsSeconds: 60 }))).rejects.toThrow(/gateway gw-\d exited with code 1/);
    expect(Date.now() - t0).toBeLessThan(30_000);
  }, 60_000);
});
