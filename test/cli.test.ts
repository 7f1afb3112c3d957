import { describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { MAIN, until } from './helpers/gateway';

interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/** Runs `fedgate …args` to its end (killed after `ms`). */
function fedgate(args: string[], opts: { ms?: number; cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.ms ?? 20_000);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

describe('a bad option value', () => {
  it.each([
    [['simulate', '--clients', '0'], `error: option '--clients <n>' argument '0' is invalid. expected a whole number from 1 to 1000, got "0"\n(see fedgate simulate --help)\n`],
    [['simulate', '--rounds', '-1'], `error: option '--rounds <n>' argument '-1' is invalid. expected a whole number from 1 up, got "-1"\n(see fedgate simulate --help)\n`],
    [['simulate', '--codec', 'bogus'], `error: option '--codec <codec>' argument 'bogus' is invalid. unknown codec "bogus"; use one of none, int8, int4, topk, topk-int8\n(see fedgate simulate --help)\n`],
    [['simulate', '--mode', 'bogus'], `error: option '--mode <mode>' argument 'bogus' is invalid. Allowed choices are processes, virtual.\n(see fedgate simulate --help)\n`],
    [['agent', '--threads', '0'], `error: option '--threads <n>' argument '0' is invalid. expected a whole number from 1 up, got "0"\n(see fedgate agent --help)\n`],
    [['aggregator', '--target-quantile', '2'], `error: option '--target-quantile <q>' argument '2' is invalid. expected a number above 0 and at most 1, got "2"\n(see fedgate aggregator --help)\n`],
    [['simulate', '--hidden', '128,,64'], `error: option '--hidden <sizes>' argument '128,,64' is invalid. expected comma-separated whole numbers of 1 or more, e.g. 128,64; got "128,,64"\n(see fedgate simulate --help)\n`],
    [['config', 'check'], `error: missing required argument 'file'\n(see fedgate config check --help)\n`],
  ])('fedgate %j: one line and a hint, exit 1', async (args, stderr) => {
    const r = await fedgate(args);
    expect(r.stderr).toBe(stderr);
    expect(r.stdout).toBe('');
    expect(r.code).toBe(1);
  });
});

/** A running `fedgate …args`, its output so far. */
function startFedgate(args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): { child: ChildProcess; out: { stdout: string; stderr: string }; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> } {
  const child = spawn(process.execPath, [MAIN, ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (d) => (out.stdout += d));
  child.stderr!.on('data', (d) => (out.stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on('exit', (code, signal) => r({ code, signal })));
  return { child, out, exited };
}

function childrenOf(pid: number): number[] {
  return spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('stopping simulate', () => {
  const quick = ['simulate', '--clients', '2', '--rounds', '20', '--max-samples', '3000', '--hidden', '16', '--model-out', ''];

  it.each([['SIGINT', 130], ['SIGTERM', 143]] as const)('%s stops the gateways, closes the broker, removes its state, exits %i', async (signal, code) => {
    const tmp = mkdtempSync(path.join(tmpdir(), 'fg-cli-sig-'));
    const run = startFedgate(quick, { TMPDIR: tmp });
    try {
      await until(() => run.out.stdout.includes('round  1/20'), 60_000, 'round 1');
      const gateways = childrenOf(run.child.pid!);
      expect(gateways).toHaveLength(2);
      expect(readdirSync(tmp).filter((f) => f.startsWith('fedgate-sim-'))).toHaveLength(1);
      run.child.kill(signal);
      expect(await run.exited).toEqual({ code, signal: null });
      expect(run.out.stderr).toBe(`fedgate: ${signal}: stopping\n`);
      expect(gateways.filter(alive)).toEqual([]);
      expect(readdirSync(tmp).filter((f) => f.startsWith('fedgate-sim-'))).toEqual([]);
      expect(run.out.stdout).not.toContain('done:');
    } finally {
      run.child.kill('SIGKILL');
    }
  }, 90_000);

  it('a simulate killed hard (SIGKILL) leaves no gateway running', async () => {
    const run = startFedgate(quick);
    let gateways: number[] = [];
    try {
      await until(() => run.out.stdout.includes('round  1/20'), 60_000, 'round 1');
      gateways = childrenOf(run.child.pid!);
      expect(gateways).toHaveLength(2);
      run.child.kill('SIGKILL');
      await run.exited;
      // Their IPC channel closes with the parent: they stop within moments, not never.
      await until(() => gateways.every((p) => !alive(p)), 5_000, 'gateways gone');
    } finally {
      for (const p of gateways.filter(alive)) process.kill(p, 'SIGKILL');
    }
  }, 90_000);
});
