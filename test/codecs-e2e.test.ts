import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { runAggregatorJob, type JobOptions } from '../agent/sim';
import { ErrorFeedback, payloadBytes } from '../agent/compress';
import { mlp, paramCount } from '../agent/model';
import { startAedes, type TestBroker } from './helpers/brokers';

const CLI = path.resolve(__dirname, '../dist/agent/cli/main.js');
const P = paramCount(mlp(784, [32], 10));

function startAgent(url: string, fleet: string, id: string, stateDir: string, env: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, [CLI, 'agent', '--broker', url, '--fleet', fleet, '--node-id', id, '--shard', `${id.endsWith('a') ? 0 : 1}/2`,
    '--partition', 'iid', '--max-samples', '400', '--max-cpu-load', '1', '--state-dir', stateDir, '--no-profile'], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, ...env } });
}

async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const done = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGTERM');
  return done;
}

function job(url: string, fleet: string, codec: JobOptions['codec']): JobOptions {
  return {
    url, prefix: 'fedgate', fleet, dataset: 'mnist', hidden: [32], rounds: 2, minClients: 2, waitForClientsSeconds: 60, clientsPerRound: 0,
    epochs: 1, batchSize: 32, lr: 0.1, codec, deadlineSeconds: 60, seed: 3, strategy: 'fedavg',
  };
}

describe('codecs end to end over MQTT', () => {
  let broker: TestBroker;
  beforeAll(async () => { broker = await startAedes(); });
  afterAll(async () => { await broker?.close(); });

  it('top-k + int8 updates are over 100× smaller than float32, and each gateway persists its error-feedback residual', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-codec-'));
    const agents = ['gw-a', 'gw-b'].map((id) => startAgent(broker.url, 'codec1', id, path.join(dir, id)));
    try {
      const report = await runAggregatorJob(job(broker.url, 'codec1', { codec: 'topk-int8', k: 0.01 }));
      // P = 25,450, k = 255: header 20 + one scale 4 + 255 q + an index stream of 255..451 bytes.
      expect(P).toBe(25_450);
      const [least, most] = [20 + 4 + 255 + 255, 20 + 4 + 255 + 451];
      expect(payloadBytes(P, { codec: 'topk-int8', k: 0.01 })).toBe(most);
      for (const r of report.rounds) {
        expect(r.participants).toBe(2);
        expect(r.tasks.map((t) => t.codec)).toEqual(['topk-int8 k=0.01', 'topk-int8 k=0.01']);
        expect(r.bytesUp).toBeGreaterThanOrEqual(2 * least);
        expect(r.bytesUp).toBeLessThan(2 * (most + 600)); // one frame each: 32-byte header + metadata
        // ~170× on the 101k-parameter default model; on this 25k-parameter one the frame header and
        // metadata weigh more.
        expect(r.bytesUp * 100).toBeLessThan(2 * P * 4);
      }
      expect(report.final!.accuracy).toBeGreaterThan(0.2);
    } finally {
      expect(await Promise.all(agents.map(stop))).toEqual([0, 0]);
    }
    for (const id of ['gw-a', 'gw-b']) {
      const file = path.join(dir, id, 'residual.fgef');
      expect(existsSync(file)).toBe(true);
      const ef = await ErrorFeedback.load(file, P);
      let norm = 0;
      for (const v of ef.residual) norm += v * v;
      expect(norm).toBeGreaterThan(0); // 99 % of each delta was held back for later rounds
    }
  }, 120_000);

  it('honours a codec pinned in one gateway\'s configuration; the others get the aggregator\'s choice', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-codec-'));
    const agents = [
      startAgent(broker.url, 'codec2', 'gw-a', path.join(dir, 'a'), { FEDGATE_COMPRESSION_CODEC: 'int4' }),
      startAgent(broker.url, 'codec2', 'gw-b', path.join(dir, 'b')),
    ];
    try {
      const report = await runAggregatorJob(job(broker.url, 'codec2', 'auto'));
      for (const r of report.rounds) {
        expect(Object.fromEntries(r.tasks.map((t) => [t.node, t.codec]))).toEqual({ 'gw-a': 'int4', 'gw-b': 'int8' });
        expect(r.bytesUp).toBeGreaterThan(payloadBytes(P, { codec: 'int4' }) + payloadBytes(P, { codec: 'int8' }));
        expect(r.bytesUp).toBeLessThan(payloadBytes(P, { codec: 'int4' }) + payloadBytes(P, { codec: 'int8' }) + 1200);
      }
      // Regression: with a codec pinned for the job, the report said int8 for gw-a, which encoded
      // with its own int4 pin all the same. The node's pin wins, and the report says so.
      const pinnedJob = await runAggregatorJob(job(broker.url, 'codec2', { codec: 'int8' }));
      for (const r of pinnedJob.rounds) {
        expect(Object.fromEntries(r.tasks.map((t) => [t.node, t.codec]))).toEqual({ 'gw-a': 'int4', 'gw-b': 'int8' });
        expect(r.bytesUp).toBeGreaterThan(payloadBytes(P, { codec: 'int4' }) + payloadBytes(P, { codec: 'int8' }));
        expect(r.bytesUp).toBeLessThan(payloadBytes(P, { codec: 'int4' }) + payloadBytes(P, { codec: 'int8' }) + 1200);
      }
    } finally {
      await Promise.all(agents.map(stop));
    }
  }, 120_000);
});
