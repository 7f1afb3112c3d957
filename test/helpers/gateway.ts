import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { MOSQUITTO, freeStablePort } from './brokers';

/** Helpers for the gateway suites: real agent processes, a mosquitto whose log the test reads, the mosquitto CLI tools. */

export const ROOT = path.resolve(__dirname, '../..');
export const MAIN = path.join(ROOT, 'dist/agent/cli/main.js');

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function until(cond: () => boolean, ms = 10_000, what = 'condition'): Promise<void> {
  const t = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > t) throw new Error(`${what} not met within ${ms} ms`);
    await sleep(20);
  }
}

export interface LoggedBroker {
  url: string;
  port: number;
  dir: string;
  /** Everything mosquitto logged (with `log_type subscribe`: one line per subscription). */
  log(): string;
  /** Resolves once the broker has logged `count` subscriptions to exactly `topic`. */
  subscribed(topic: string, count?: number, ms?: number): Promise<void>;
  /** SIGTERM: a clean shutdown (mosquitto still sends the wills of connected clients); SIGKILL: a crash (no wills). */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port with the same configuration. */
  restart(): Promise<void>;
  readonly running: boolean;
}

async function portOpen(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const s = connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

/**
 * mosquitto with broker-config/mosquitto-test.conf (+ `extra`), logging subscriptions to stderr so
 * that a test can wait until a `mosquitto_sub` it started is really subscribed before publishing.
 */
export async function startLoggedMosquitto(extra = '', port?: number): Promise<LoggedBroker> {
  if (!MOSQUITTO) throw new Error('mosquitto is not installed');
  const p = port ?? (await freeStablePort()); // it may be restarted on this port
  const dir = mkdtempSync(path.join(tmpdir(), 'fg-gw-mosq-'));
  const template = readFileSync(path.join(ROOT, 'broker-config/mosquitto-test.conf'), 'utf8');
  const configFile = path.join(dir, 'mosquitto.conf');
  writeFileSync(configFile, template.replace('@PORT@', String(p)) + '\nlog_type subscribe\n' + extra);
  let child: ChildProcess | undefined;
  let logText = '';
  const start = async () => {
    const c = spawn(MOSQUITTO!, ['-c', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    child = c;
    c.stderr!.on('data', (d) => (logText += d));
    const t = Date.now() + 10_000;
    while (!(await portOpen(p))) {
      if (c.exitCode !== null) throw new Error(`mosquitto exited with code ${c.exitCode}:\n${logText}`);
      if (Date.now() > t) throw new Error(`mosquitto did not open port ${p}:\n${logText}`);
      await sleep(30);
    }
  };
  const stop = (signal: NodeJS.Signals = 'SIGTERM') => new Promise<void>((resolve) => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return resolve();
    c.once('exit', () => resolve());
    c.kill(signal);
  });
  await start();
  return {
    url: `mqtt://127.0.0.1:${p}`, port: p, dir,
    log: () => logText,
    async subscribed(topic, count = 1, ms = 10_000) {
      await until(() => (logText.match(subscriptionLine(topic))?.length ?? 0) >= count, ms, `subscription to ${topic}`);
    },
    stop,
    async restart() {
      await stop();
      await start();
    },
    get running() {
      return !!child && child.exitCode === null && child.signalCode === null;
    },
  };
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end (or kills it after `timeoutMs`). */
export function run(cmd: string, args: string[], timeoutMs = 20_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('error', reject);
    c.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Starts `mosquitto_sub <args>` and resolves, once the broker has logged its subscription to
 * `topic`, with the promise of its result: so a publish that follows cannot race it.
 */
export async function subscribeWith(broker: LoggedBroker, topic: string, args: string[]): Promise<{ result: Promise<CliResult> }> {
  const before = (broker.log().match(subscriptionLine(topic))?.length ?? 0);
  const result = run('mosquitto_sub', args);
  await broker.subscribed(topic, before + 1);
  // Wrapped: an async function returning the bare promise would wait for it.
  return { result };
}

function subscriptionLine(topic: string): RegExp {
  return new RegExp(`^\\d+: \\S+ \\d ${topic.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'gm');
}

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export interface AgentProcess {
  child: ChildProcess;
  lines: LogLine[];
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first log line (from `from` on) whose msg is `msg` (and that matches `where`). */
  waitForLog(msg: string, where?: (l: LogLine) => boolean, ms?: number, from?: number): Promise<LogLine>;
  kill(signal?: NodeJS.Signals): void;
}

/** `node dist/agent/cli/main.js agent <args>`, its JSON log lines (stderr) parsed as they come. */
export function startAgent(args: string[], env: NodeJS.ProcessEnv = {}): AgentProcess {
  const child = spawn(process.execPath, [MAIN, 'agent', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const lines: LogLine[] = [];
  let err = '';
  let partial = '';
  child.stderr!.on('data', (d) => {
    err += d;
    partial += d;
    const parts = partial.split('\n');
    partial = parts.pop()!;
    for (const p of parts) {
      try {
        lines.push(JSON.parse(p) as LogLine);
      } catch {
        lines.push({ level: 0, msg: p });
      }
    }
  });
  child.stdout!.resume();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    child, lines, exited,
    stderr: () => err,
    async waitForLog(msg, where = () => true, ms = 30_000, from = 0) {
      let found: LogLine | undefined;
      await until(() => {
        if (child.exitCode !== null) throw new Error(`agent exited (${child.exitCode}) before logging "${msg}":\n${err}`);
        found = lines.slice(from).find((l) => l.msg === msg && where(l));
        return found !== undefined;
      }, ms, `agent log "${msg}"`).catch((e: Error) => { throw new Error(`${e.message}\n${err}`); });
      return found!;
    },
    kill(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}
