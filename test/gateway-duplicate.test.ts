import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import mqtt from 'mqtt';
import { startAedes, type TestBroker } from './helpers/brokers';

const CLI = path.resolve(__dirname, '../dist/agent/cli/main.js');

describe('two agents with one node id', () => {
  let broker: TestBroker;
  beforeAll(async () => { broker = await startAedes(); });
  afterAll(async () => { await broker?.close(); });

  it('the older one stops with a clear error and exit status 78 (not restarted by systemd), and leaves the newer one\'s retained state alone', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-dup-'));
    const start = (n: string) => {
      const child = spawn(process.execPath, [CLI, 'agent', '--broker', broker.url, '--fleet', 'dup', '--node-id', 'gw-same', '--max-samples', '100', '--max-cpu-load', '1', '--no-profile', '--state-dir', path.join(dir, n)], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr!.on('data', (d) => (err += d));
      const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
      return { child, exited, stderr: () => err };
    };
    const first = start('a');
    await new Promise((r) => setTimeout(r, 2500));
    const second = start('b');
    // Exit status 78 (EX_CONFIG), which the systemd units do not restart (RestartPreventExitStatus=78):
    // restarted, it would be the newer one and evict the survivor in turn, for ever.
    expect(await first.exited).toBe(78);
    const message = 'node id gw-same is in use by another agent started later; give one of them another node id (node.id / --node-id); not restarting';
    const lines = first.stderr().trimEnd().split('\n');
    expect(lines[lines.length - 1]).toBe(`fedgate: ${message}`);
    const fatal = lines.map((l) => { try { return JSON.parse(l); } catch { return {}; } }).filter((l) => l.level === 60);
    expect(fatal).toEqual([expect.objectContaining({ msg: message, node: 'gw-same', exitCode: 78 })]);
    // The survivor reconnects (after its backoff) and its birth is the retained state again.
    const c = await mqtt.connectAsync(broker.url);
    const states: Record<string, unknown>[] = [];
    c.on('message', (_t, p) => states.push(JSON.parse(p.toString())));
    await c.subscribeAsync('fedgate/dup/node/gw-same/state');
    const until = Date.now() + 20_000;
    while (!states.some((st) => st.online === true) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    const online = states.filter((st) => st.online === true);
    expect(online.length).toBeGreaterThan(0);
    expect(new Set(online.map((st) => st.instance)).size).toBe(1); // only the survivor is online
    expect(online[0]).toMatchObject({ node: 'gw-same' });
    await c.endAsync();
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
  }, 60_000);
});
