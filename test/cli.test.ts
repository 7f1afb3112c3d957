import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { MAIN } from './helpers/gateway';

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
