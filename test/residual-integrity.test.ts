import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import mqtt from 'mqtt';
import { ErrorFeedback, RESIDUAL_BOUND_FACTOR } from '../agent/compress';
import { initParams, mlp, paramCount } from '../agent/model';
import { runAggregatorJob, type JobOptions } from '../agent/sim';
import { startAedes, type TestBroker } from './helpers/brokers';
import { MAIN, startAgent, type AgentProcess } from './helpers/gateway';

/**
 * The error-feedback residual file: a CRC-32 over header and payload, the older unchecked version
 * still read, and a bound that keeps a residual absurd next to the model out of any update.
 * Regression: a residual.fgef whose first 1000 floats were overwritten with 1e30 (finite, so the
 * loader took it) went into gw-0's top-k update; the aggregator folded it into the model (loss
 * 7.57e+30), and the next round every gateway's training diverged to NaN.
 */
const hex32 = (v: number) => `0x${v.toString(16).padStart(8, '0')}`;
const F1E30 = Math.fround(1e30);

/** A version-1 file (older releases: no checksum, the word at 12 is 0). */
function v1File(values: Float32Array): Buffer {
  const buf = Buffer.alloc(16 + 4 * values.length);
  buf.write('FGEF', 0, 'latin1');
  buf.writeUInt32LE(1, 4);
  buf.writeUInt32LE(values.length, 8);
  Buffer.from(values.buffer, values.byteOffset, values.byteLength).copy(buf, 16);
  return buf;
}

/** Overwrites the first `n` floats of a residual file with 1e30, as the reviewer did; returns the stored and the now computed CRC. */
function poison(file: string, n: number): { stored: number; computed: number } {
  const buf = readFileSync(file);
  for (let i = 0; i < n; i++) buf.writeFloatLE(1e30, 16 + 4 * i);
  writeFileSync(file, buf);
  return { stored: buf.readUInt32LE(12), computed: crc32(buf.subarray(16), crc32(buf.subarray(0, 12))) };
}

describe('residual file integrity', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fg-resid-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('save() writes version 2 with a CRC-32 of the first 12 header bytes and the payload', async () => {
    const ef = new ErrorFeedback(4);
    ef.residual.set([0.5, -0.25, 0, 1e-3]);
    const file = path.join(dir, 'v2.fgef');
    await ef.save(file);
    const buf = readFileSync(file);
    expect(buf.length).toBe(32);
    expect(buf.toString('latin1', 0, 4)).toBe('FGEF');
    expect(buf.readUInt32LE(4)).toBe(2);
    expect(buf.readUInt32LE(8)).toBe(4);
    expect(buf.readUInt32LE(12)).toBe(crc32(buf.subarray(16), crc32(buf.subarray(0, 12))));
    expect(Array.from((await ErrorFeedback.load(file, 4)).residual)).toEqual(Array.from(Float32Array.of(0.5, -0.25, 0, 1e-3)));
  });

  it('a finite but corrupt file (values overwritten with 1e30) fails its checksum, naming the file and both CRCs', async () => {
    const ef = new ErrorFeedback(2000);
    for (let i = 0; i < 2000; i++) ef.residual[i] = Math.sin(i) * 1e-3;
    const file = path.join(dir, 'poisoned.fgef');
    await ef.save(file);
    const { stored, computed } = poison(file, 1000);
    expect(stored).not.toBe(computed);
    await expect(ErrorFeedback.load(file, 2000)).rejects.toThrow(
      new Error(`${file}: not a usable error-feedback residual: checksum mismatch (stored ${hex32(stored)}, computed ${hex32(computed)}): the file is corrupt`));
    // The CRC word itself changed, the payload intact.
    await ef.save(file);
    const buf = readFileSync(file);
    buf.writeUInt32LE(buf.readUInt32LE(12) ^ 1, 12);
    writeFileSync(file, buf);
    await expect(ErrorFeedback.load(file, 2000)).rejects.toThrow(/checksum mismatch \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\): the file is corrupt$/);
  });

  it('still reads a version-1 file (no checksum) and rewrites it as version 2', async () => {
    const file = path.join(dir, 'v1.fgef');
    writeFileSync(file, v1File(Float32Array.of(0.5, -0.25, 3)));
    const ef = await ErrorFeedback.load(file, 3);
    expect(Array.from(ef.residual)).toEqual([0.5, -0.25, 3]);
    await ef.save(file);
    expect(readFileSync(file).readUInt32LE(4)).toBe(2);
    expect(Array.from((await ErrorFeedback.load(file, 3)).residual)).toEqual([0.5, -0.25, 3]);
    // Version 3 is not ours.
    const v3 = v1File(Float32Array.of(1));
    v3.writeUInt32LE(3, 4);
    writeFileSync(file, v3);
    await expect(ErrorFeedback.load(file, 1)).rejects.toThrow(new Error(`${file}: not a usable error-feedback residual: unsupported version 3`));
  });

  it('check(): a residual beyond 1000 × max(1, the largest |weight|), or non-finite, is refused with its index and value', () => {
    expect(RESIDUAL_BOUND_FACTOR).toBe(1000);
    const ef = new ErrorFeedback(3);
    const small = Float32Array.of(0.5, -0.2, 0); // weights below 1: the bound is 1000
    ef.residual.set([1000, -1000, 0]);
    expect(ef.check(small)).toBeUndefined();
    ef.residual.set([0, 0, -1001]);
    expect(ef.check(small)).toBe('value -1001 at index 2 is beyond 1000 (1000 × max(1, the model\'s largest |weight|))');
    const big = Float32Array.of(4, -2, 0); // largest |weight| 4: the bound is 4000
    ef.residual.set([0, 3999, 0]);
    expect(ef.check(big)).toBeUndefined();
    ef.residual.set([F1E30, 0, 0]);
    expect(ef.check(big)).toBe(`value ${F1E30} at index 0 is beyond 4000 (1000 × max(1, the model's largest |weight|))`);
    ef.residual.set([0, Infinity, 0]);
    expect(ef.check(big)).toBe('value Infinity at index 1 is not finite');
    expect(() => ef.check(new Float32Array(2))).toThrow(new RangeError('model has 2 elements, the residual has 3'));
  });
});

// The reviewer's repro with real agent processes: top-k 5 % pinned in the retained fleet config, a
// job that leaves each gateway a residual, then gw-0's file overwritten with 1e30 (checksum fails)
// and gw-1's replaced by an older, unchecked version-1 file with the same values (the bound catches it).
const missing = existsSync(MAIN) ? undefined : 'dist/ is not built (npx tsc -p tsconfig.json)';
const suite = missing ? describe.skip : describe;
if (missing) it.skip(`residual integrity with real agents: ${missing}`, () => undefined);

const P = paramCount(mlp(784, [32], 10));
const agents: AgentProcess[] = [];
afterEach(() => {
  for (const a of agents.splice(0)) a.kill('SIGKILL');
});

suite('a corrupt residual never reaches an update (real agents, aedes)', { timeout: 150_000 }, () => {
  let broker: TestBroker;
  beforeAll(async () => { broker = await startAedes(); });
  afterAll(async () => { await broker?.close(); });

  const fleet = 'resid';
  const job = (rounds: number): JobOptions => ({
    url: broker.url, prefix: 'fedgate', fleet, dataset: 'mnist', hidden: [32], rounds, minClients: 2, waitForClientsSeconds: 60, clientsPerRound: 0,
    epochs: 1, batchSize: 32, lr: 0.1, codec: 'auto', deadlineSeconds: 60, seed: 3, strategy: 'fedavg',
  });
  const start = (id: string, stateDir: string) => {
    const a = startAgent(['--broker', broker.url, '--fleet', fleet, '--node-id', id, '--shard', `${id === 'gw-0' ? 0 : 1}/2`, '--partition', 'iid',
      '--max-samples', '400', '--max-cpu-load', '1', '--state-dir', stateDir, '--no-profile']);
    agents.push(a);
    return a;
  };
  const stop = async (a: AgentProcess) => {
    a.kill('SIGTERM');
    expect((await a.exited).code).toBe(0);
  };

  it('gw-0 (checksum) and gw-1 (a v1 file beyond the bound) warn, start from zero, and the job trains normally', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-resid-e2e-'));
    const c = await mqtt.connectAsync(broker.url, { clientId: 'operator-resid' });
    await c.publishAsync(`fedgate/${fleet}/config`, JSON.stringify({ version: 2, config: { compression: { codec: 'topk', k: 0.05 } } }), { qos: 1, retain: true });
    await c.endAsync();
    const dirs = { 'gw-0': path.join(dir, 'gw-0'), 'gw-1': path.join(dir, 'gw-1') };
    const files = { 'gw-0': path.join(dirs['gw-0'], 'residual.fgef'), 'gw-1': path.join(dirs['gw-1'], 'residual.fgef') };
    let a0 = start('gw-0', dirs['gw-0']);
    let a1 = start('gw-1', dirs['gw-1']);
    const first = await runAggregatorJob(job(1));
    expect(first.rounds.map((r) => [r.participants, r.tasks.map((t) => t.codec)])).toEqual([[2, ['topk k=0.05', 'topk k=0.05']]]);
    await Promise.all([stop(a0), stop(a1)]);

    const { stored, computed } = poison(files['gw-0'], 1000);
    const honest = await ErrorFeedback.load(files['gw-1'], P);
    const values = honest.residual.slice();
    values.fill(1e30, 0, 1000);
    writeFileSync(files['gw-1'], v1File(values));

    a0 = start('gw-0', dirs['gw-0']);
    a1 = start('gw-1', dirs['gw-1']);
    const report = await runAggregatorJob(job(2));
    for (const r of report.rounds) {
      expect(r.participants).toBe(2);
      expect(r.failures).toEqual([]);
      expect(r.loss).toBeLessThan(2.5); // 7.57e+30 before the fix (1.80, 1.37 now)
    }
    expect(report.final!.accuracy).toBeGreaterThan(0.5); // 0.0958 before the fix (0.68 now)
    const warned = (a: AgentProcess) => a.lines.filter((l) => l.msg === 'error-feedback residual not usable; starting from zero');
    expect(warned(a0)).toEqual([expect.objectContaining({
      level: 40, file: files['gw-0'],
      err: `${files['gw-0']}: not a usable error-feedback residual: checksum mismatch (stored ${hex32(stored)}, computed ${hex32(computed)}): the file is corrupt`,
    })]);
    // The round-1 model is the job's initial one: every weight below 1, so the bound is 1000.
    expect(Math.max(...Array.from(initParams(mlp(784, [32], 10), 3), Math.abs))).toBeLessThan(1);
    expect(warned(a1)).toEqual([expect.objectContaining({
      level: 40, file: files['gw-1'],
      err: `${files['gw-1']}: not a usable error-feedback residual: value ${F1E30} at index 0 is beyond 1000 (1000 × max(1, the model's largest |weight|))`,
    })]);
    await Promise.all([stop(a0), stop(a1)]);
    // Both files were rewritten as checked version-2 files holding sane residuals.
    for (const file of Object.values(files)) {
      expect(readFileSync(file).readUInt32LE(4)).toBe(2);
      const ef = await ErrorFeedback.load(file, P);
      expect(ef.residual.every((v) => Math.abs(v) < 1)).toBe(true);
    }
  });
});
