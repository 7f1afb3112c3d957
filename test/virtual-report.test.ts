import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { formatVirtualRound, runVirtualJob, type VirtualJobOptions } from '../agent/sim/run-virtual';
import type { VirtualRound, VirtualTask } from '../agent/sim/virtual';

describe('virtual mode output', () => {
  const t = (node: string, x: Partial<VirtualTask> = {}): VirtualTask => ({ node, tier: 'pi3', steps: 4, stepsDone: 4, actualSeconds: 1, late: false, ...x });
  const r: VirtualRound = { round: 3, start: 0, end: 9, participants: 1, selected: 4, accuracy: 0.5, loss: 1, stragglerWaitSeconds: 0, bytesUp: 0, bytesDown: 0, deadlineSeconds: 3, tasks: [t('dev-1'), t('dev-2', { late: true }), t('dev-3', { late: true }), t('dev-4', { failed: 'offline' })] };

  // Regression: `late 2` without the ids the README and processes mode's line give.
  it('names the late nodes as processes mode does: late N (ids)', () => {
    expect(formatVirtualRound(r, 5)).toBe('round 3/5  t=9.0 s  participants 1/4  work 4-4 steps  acc 0.5000  loss 1.0000  deadline 3.0 s  straggler wait 0.0 s  late 2 (dev-2,dev-3)  offline 1');
    expect(formatVirtualRound({ ...r, tasks: [t('dev-1')] }, 5)).not.toMatch(/late/);
  });

  // Regression: the report's config held "modelOut": "fedgate-model.onnx" (and the other settings of
  // a model, checkpoint or broker the virtual run never has), a password from the environment too.
  it('keeps model, checkpoint and broker settings out of the report', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-vreport-'));
    const trace = path.join(dir, 'fleet.json');
    writeFileSync(trace, JSON.stringify({ devices: [{ id: 'gw-a', tier: 'x86' }] }));
    const report = path.join(dir, 'r.json');
    // As the CLI passes them: every job option, the defaults included.
    const cli = { prefix: 'fedgate', fleet: 'default', username: 'u', password: 'secret', maxPacketBytes: 1 << 20, checkpoint: undefined, resume: undefined, fresh: undefined, modelOut: 'fedgate-model.onnx' };
    const o: VirtualJobOptions = { dataset: 'mnist', clients: 10, partition: 'iid', hidden: [16], maxSamples: 64, strategy: 'fedavg', codec: { codec: 'int8' }, clientsPerRound: 0, epochs: 1, batchSize: 32, lr: 0.1, deadlineSeconds: 100, seed: 1, rounds: 1, trace, report };
    const res = await runVirtualJob({ ...cli, ...o } as VirtualJobOptions, () => {});
    const written = JSON.parse(readFileSync(report, 'utf8'));
    for (const config of [written.config, res.config]) {
      for (const k of ['modelOut', 'checkpoint', 'resume', 'fresh', 'prefix', 'fleet', 'username', 'password', 'maxPacketBytes']) expect(config).not.toHaveProperty(k);
      expect(config).toMatchObject({ mode: 'virtual', devices: 1, trace, rounds: 1, strategy: 'fedavg', seed: 1, report });
    }
    expect(readFileSync(report, 'utf8')).not.toContain('secret');
    expect(written.rounds).toHaveLength(1);
  }, 60_000);
});
