import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { serviceNotifier, watchdogMs } from '../agent/service';
import { loadNative } from '../agent/compress/native';
import { startAedes, type TestBroker } from './helpers/brokers';
import { MAIN, startAgent, until, type AgentProcess } from './helpers/gateway';

/**
 * systemd readiness and watchdog: the pure notifier with an injected sender, the addon's real
 * sd_notify datagrams received by a unix socket (python3: Node has no AF_UNIX datagram sockets),
 * and a real agent process under a simulated systemd: READY=1, WATCHDOG=1, STOPPING=1.
 */
const quiet: Record<string, unknown> = { info: () => undefined, warn: vi.fn(), error: vi.fn(), debug: () => undefined };

describe('serviceNotifier', () => {
  afterEach(() => vi.useRealTimers());

  it('does nothing outside systemd', () => {
    const send = vi.fn();
    const n = serviceNotifier({ env: {}, send, log: quiet as never });
    n.ready('x');
    n.stopping();
    expect(n.enabled).toBe(false);
    expect(send).not.toHaveBeenCalled();
  });

  it('sends READY with a one-line status, feeds the watchdog at half its period, stops on STOPPING', () => {
    vi.useFakeTimers();
    const sent: string[] = [];
    const n = serviceNotifier({ env: { NOTIFY_SOCKET: '/run/x.sock', WATCHDOG_USEC: '4000000' }, send: (s, m) => sent.push(`${s} ${m}`), log: quiet as never });
    expect(n.watchdogMs).toBe(4000);
    n.ready('node gw-1\nfleet default');
    expect(sent).toEqual(['/run/x.sock READY=1\nSTATUS=node gw-1 fleet default']);
    vi.advanceTimersByTime(6000);
    expect(sent.slice(1)).toEqual(['/run/x.sock WATCHDOG=1', '/run/x.sock WATCHDOG=1', '/run/x.sock WATCHDOG=1']);
    n.stopping('shutting down');
    vi.advanceTimersByTime(10_000);
    expect(sent.slice(4)).toEqual(['/run/x.sock STOPPING=1\nSTATUS=shutting down']);
  });

  it('a failing socket is logged once and never throws', () => {
    const warn = vi.fn();
    const n = serviceNotifier({ env: { NOTIFY_SOCKET: '/run/x.sock' }, send: () => { throw new Error('sendto: Connection refused'); }, log: { ...quiet, warn } as never });
    n.ready();
    n.status('round 1');
    n.stopping();
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0]).toEqual([{ err: 'sendto: Connection refused' }, 'could not notify systemd']);
  });

  it('says loudly when systemd waits but the addon that would answer is not built', () => {
    const error = vi.fn();
    const n = serviceNotifier({ env: { NOTIFY_SOCKET: '/run/x.sock' }, send: null, log: { ...quiet, error } as never });
    expect(n.enabled).toBe(false);
    n.ready();
    expect(error).toHaveBeenCalledTimes(1);
    expect(error.mock.calls[0][1]).toMatch(/^NOTIFY_SOCKET is set but the native addon that speaks to it is not built: .*use Type=exec/);
  });

  it('watchdogMs honours WATCHDOG_PID and ignores junk', () => {
    expect(watchdogMs({ WATCHDOG_USEC: '30000000' }, 7)).toBe(30_000);
    expect(watchdogMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '7' }, 7)).toBe(30_000);
    expect(watchdogMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '8' }, 7)).toBeUndefined();
    for (const v of ['', '0', '-5', 'abc', '1.5']) expect(watchdogMs({ WATCHDOG_USEC: v }, 7)).toBeUndefined();
  });
});

// A unix datagram socket that prints what it receives, one datagram a line ("\n" inside shown as "|").
const LISTENER = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
name = sys.argv[1]
s.bind('\\0' + name[1:] if name.startswith('@') else name)
print('listening', flush=True)
while True:
    print(s.recv(4096).decode().replace('\\n', '|'), flush=True)
`;
const python = spawnSync('python3', ['-c', 'import socket; socket.AF_UNIX']).status === 0;
const sdNotify = loadNative().sdNotify;
const missing = !python ? 'python3 is not installed (it listens on the unix socket)' : !sdNotify ? 'native addon not built (node native/build.js)' : !existsSync(MAIN) ? 'dist/ is not built' : undefined;
if (missing) it.skip(`sd_notify over a real socket: ${missing}`, () => undefined);

function listen(name: string): { got: string[]; child: ChildProcess; ready: Promise<void> } {
  const child = spawn('python3', ['-c', LISTENER, name], { stdio: ['ignore', 'pipe', 'inherit'] });
  const got: string[] = [];
  let partial = '';
  const ready = new Promise<void>((resolve) => {
    child.stdout!.on('data', (d) => {
      const parts = (partial + d).split('\n');
      partial = parts.pop()!;
      for (const p of parts) {
        if (p === 'listening') resolve();
        else got.push(p);
      }
    });
  });
  return { got, child, ready };
}

describe.skipIf(missing !== undefined)('sd_notify over a real unix socket', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fg-notify-'));
  let broker: TestBroker;
  const children: ChildProcess[] = [];
  const agents: AgentProcess[] = [];
  beforeAll(async () => { broker = await startAedes(); });
  afterAll(async () => {
    for (const a of agents) a.kill('SIGKILL');
    for (const c of children) c.kill('SIGKILL');
    await broker?.close();
  });

  it('the addon sends datagrams to a path and to an abstract name, and reports errors with errno text', async () => {
    for (const name of [path.join(dir, 'notify.sock'), `@fedgate-test-${process.pid}`]) {
      const l = listen(name);
      children.push(l.child);
      await l.ready;
      sdNotify!(name, 'READY=1\nSTATUS=hello');
      await until(() => l.got.length === 1, 5000, 'datagram');
      expect(l.got).toEqual(['READY=1|STATUS=hello']);
    }
    expect(() => sdNotify!(path.join(dir, 'nobody.sock'), 'READY=1')).toThrow(`sdNotify: sendto ${path.join(dir, 'nobody.sock')}: No such file or directory`);
    expect(() => sdNotify!('relative.sock', 'READY=1')).toThrow(/must be an absolute path or an abstract name starting with @/);
    expect(() => (sdNotify as unknown as (a: unknown, b: unknown) => void)(1, 'x')).toThrow(TypeError);
  });

  it('a real agent says READY, then its status once it serves, feeds the watchdog, and says STOPPING on SIGTERM', async () => {
    const socket = path.join(dir, 'agent.sock');
    const l = listen(socket);
    children.push(l.child);
    await l.ready;
    const agent = startAgent(['--broker', broker.url, '--fleet', 'notify', '--node-id', 'gw-sd', '--state-dir', path.join(dir, 'state'), '--max-samples', '100', '--max-cpu-load', '1', '--log-level', 'info'],
      { NOTIFY_SOCKET: socket, WATCHDOG_USEC: '600000' });
    agents.push(agent);
    await agent.waitForLog('agent started');
    await until(() => l.got.filter((m) => m === 'WATCHDOG=1').length >= 3, 10_000, 'three watchdog pings');
    expect(l.got[0]).toBe(`READY=1|STATUS=node gw-sd: connecting to the broker at ${new URL(broker.url).host}`);
    expect(l.got).toContain('STATUS=node gw-sd of fleet notify, 100 samples');
    expect(l.got.filter((m) => !m.startsWith('STATUS=')).slice(1, 4)).toEqual(['WATCHDOG=1', 'WATCHDOG=1', 'WATCHDOG=1']);
    agent.kill('SIGTERM');
    expect(await agent.exited).toEqual({ code: 0, signal: null });
    await until(() => l.got.includes('STOPPING=1|STATUS=shutting down'), 5000, 'STOPPING');
    // Nothing after STOPPING: the watchdog timer was stopped.
    expect(l.got[l.got.length - 1]).toBe('STOPPING=1|STATUS=shutting down');
  }, 60_000);

  // Regression: the agent said READY=1 only once connected, so a gateway booting with its broker
  // unreachable would be killed by systemd's start timeout and restarted, again and again.
  it('an agent whose broker is unreachable is ready and fed by the watchdog while it waits, and stops cleanly', async () => {
    const socket = path.join(dir, 'waiting.sock');
    const l = listen(socket);
    children.push(l.child);
    await l.ready;
    const agent = startAgent(['--broker', 'mqtt://127.0.0.1:1', '--fleet', 'notify', '--node-id', 'gw-wait', '--state-dir', path.join(dir, 'state-wait'), '--max-samples', '100', '--log-level', 'info'],
      { NOTIFY_SOCKET: socket, WATCHDOG_USEC: '600000' });
    agents.push(agent);
    await until(() => l.got.filter((m) => m === 'WATCHDOG=1').length >= 2, 15_000, 'watchdog pings while connecting');
    expect(l.got[0]).toBe('READY=1|STATUS=node gw-wait: connecting to the broker at 127.0.0.1:1');
    agent.kill('SIGTERM');
    expect(await agent.exited).toEqual({ code: 0, signal: null });
    await until(() => l.got.includes('STOPPING=1|STATUS=shutting down'), 5000, 'STOPPING');
  }, 60_000);
});
