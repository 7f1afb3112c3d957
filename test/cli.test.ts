import { describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import mqtt from 'mqtt';
import { MAIN, until } from './helpers/gateway';
import { defaultDataDir } from '../agent/sim';
import { loadCheckpoint } from '../agent/aggregator';
import { freePort, startAedes, startMosquitto, mosquittoMissing, type TestBroker } from './helpers/brokers';

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
    // Regression: an extra or padded argument passed silently; auto's argument was called an unknown codec.
    [['simulate', '--codec', 'topk:0.01:x'], `error: option '--codec <codec>' argument 'topk:0.01:x' is invalid. topk takes one argument, a fraction k in (0, 1], e.g. topk:0.01; got "topk:0.01:x"\n(see fedgate simulate --help)\n`],
    [['simulate', '--codec', 'topk: 0.01'], `error: option '--codec <codec>' argument 'topk: 0.01' is invalid. topk takes one argument, a fraction k in (0, 1], e.g. topk:0.01; got "topk: 0.01"\n(see fedgate simulate --help)\n`],
    [['aggregator', '--codec', 'auto:0.1'], `error: option '--codec <codec>' argument 'auto:0.1' is invalid. auto takes no argument (it chooses the codec per node)\n(see fedgate aggregator --help)\n`],
    [['simulate', '--codec', 'int8:0.1'], `error: option '--codec <codec>' argument 'int8:0.1' is invalid. int8 takes no argument but "stochastic"\n(see fedgate simulate --help)\n`],
    [['simulate', '--mode', 'bogus'], `error: option '--mode <mode>' argument 'bogus' is invalid. Allowed choices are processes, virtual.\n(see fedgate simulate --help)\n`],
    [['agent', '--threads', '0'], `error: option '--threads <n>' argument '0' is invalid. expected a whole number from 1 up, got "0"\n(see fedgate agent --help)\n`],
    [['aggregator', '--target-quantile', '2'], `error: option '--target-quantile <q>' argument '2' is invalid. expected a number above 0 and at most 1, got "2"\n(see fedgate aggregator --help)\n`],
    // Regression: 0.5 was taken, and a node in two was left out of every round without a word.
    [['aggregator', '--overcommit', '0.5'], `error: option '--overcommit <x>' argument '0.5' is invalid. expected a number from 1 to 4, got "0.5"\n(see fedgate aggregator --help)\n`],
    [['simulate', '--hidden', '128,,64'], `error: option '--hidden <sizes>' argument '128,,64' is invalid. expected comma-separated whole numbers of 1 or more, e.g. 128,64; got "128,,64"\n(see fedgate simulate --help)\n`],
    // Regression: the profile printed "node": "a/b", an id the agent refuses.
    [['profile', '--node-id', 'a/b'], `error: option '--node-id <id>' argument 'a/b' is invalid. node id "a/b" contains "/", which is not allowed in an MQTT topic level\n(see fedgate profile --help)\n`],
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

  // Regression: the round open at the signal was closed with the results so far, printed, aggregated
  // and checkpointed as if it were whole.
  it('the round open at SIGINT is discarded: the checkpoint holds the whole rounds printed, and --resume runs it again', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-cli-sigckpt-'));
    const ckpt = path.join(dir, 'c.ckpt');
    const run = startFedgate([...quick, '--checkpoint', ckpt]);
    try {
      await until(() => run.out.stdout.includes('round  1/20'), 60_000, 'round 1');
      run.child.kill('SIGINT');
      expect(await run.exited).toEqual({ code: 130, signal: null });
    } finally {
      run.child.kill('SIGKILL');
    }
    const printed = run.out.stdout.split('\n').filter((l) => l.startsWith('round '));
    const saved = await loadCheckpoint<{ rounds: { round: number; participants: number }[] }>(ckpt);
    expect(saved.round).toBe(printed.length);
    expect(saved.state.rounds.map((r) => r.participants)).toEqual(printed.map(() => 2));
    const resumed = await fedgate(['simulate', '--clients', '2', '--rounds', String(saved.round + 1), '--max-samples', '3000', '--hidden', '16', '--model-out', '', '--checkpoint', ckpt, '--resume'], { ms: 60_000 });
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout.split('\n').filter((l) => l.startsWith('round '))).toEqual([expect.stringMatching(new RegExp(`^round ${saved.round + 1}/${saved.round + 1}  participants 2/2 `))]);
  }, 120_000);

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

describe('simulate on a shared broker', () => {
  it('runs in a fleet of its own: real gateways gw-0..gw-2 of the default fleet keep running and stay out of it', async () => {
    const broker: TestBroker = mosquittoMissing() ? await startAedes() : await startMosquitto();
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-cli-shared-'));
    const real = [0, 1, 2].map((i) => startFedgate(['agent', '--broker', broker.url, '--node-id', `gw-${i}`, '--shard', `${i}/3`, '--max-samples', '200',
      '--state-dir', path.join(dir, `gw-${i}`), '--max-cpu-load', '1', '--no-profile', '--log-level', 'warn']));
    const watcher = await mqtt.connectAsync(broker.url);
    try {
      const online = new Set<string>();
      watcher.on('message', (topic, payload) => {
        if (payload.length && JSON.parse(payload.toString()).online) online.add(topic.split('/')[3]);
      });
      await watcher.subscribeAsync('fedgate/default/node/+/state');
      await until(() => online.size === 3, 30_000, 'three real gateways online');

      const sim = await fedgate(['simulate', '--broker', broker.url, '--rounds', '1', '--clients', '2', '--max-samples', '300', '--hidden', '16',
        '--model-out', '', '--report', path.join(dir, 'r.json')], { ms: 90_000 });
      expect(sim.code, sim.stderr).toBe(0);
      const lines = sim.stdout.trim().split('\n');
      expect(lines[0]).toMatch(new RegExp(`^fleet sim-[0-9a-f]{8} on ${broker.url.replace(/[.]/g, '\\.')} \\(a fleet of its own; --fleet picks one\\)$`));
      expect(lines[1]).toMatch(/^round 1\/1  participants 2\/2  /);
      const report = JSON.parse(readFileSync(path.join(dir, 'r.json'), 'utf8'));
      expect(report.config.fleet).toBe(lines[0].split(' ')[1]);
      expect(report.rounds[0].tasks.map((t: { node: string }) => t.node).sort()).toEqual(['gw-0', 'gw-1']);
      for (const r of real) {
        expect(r.child.exitCode).toBe(null);
        expect(r.out.stderr).toBe('');
      }
      // Regression: every run left its aggregator state and its gateways' states and profiles
      // retained on the shared broker. A fresh subscriber now gets nothing for the sim fleet.
      const late = await mqtt.connectAsync(broker.url);
      const leftovers: string[] = [];
      late.on('message', (topic) => leftovers.push(topic));
      await late.subscribeAsync(`fedgate/${report.config.fleet}/#`, { qos: 1 });
      await new Promise((r) => setTimeout(r, 500));
      await late.endAsync();
      expect(leftovers).toEqual([]);
    } finally {
      await watcher.endAsync();
      for (const r of real) r.child.kill('SIGTERM');
      await Promise.all(real.map((r) => r.exited));
      await broker.close();
    }
  }, 120_000);
});

describe('an aggregator with no gateway', () => {
  it('fails with a clear line and writes no model or report', async () => {
    const broker = await startAedes();
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-cli-empty-'));
    try {
      const r = await fedgate(['aggregator', '--broker', broker.url, '--fleet', 'empty', '--rounds', '1', '--wait', '1', '--hidden', '16',
        '--report', 'r.json', '--log-level', 'error'], { cwd: dir });
      expect(r.stdout).toMatch(/^round 1\/1  participants 0\/0  .*\(model kept\)\n$/);
      expect(r.stderr).toBe('fedgate: no gateway took part in the round: check --broker, --prefix and --fleet (no model or report written)\n');
      expect(r.code).toBe(1);
      expect(readdirSync(dir)).toEqual([]);
    } finally {
      await broker.close();
    }
  }, 30_000);
});

describe('output files are checked before any work', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fg-cli-out-'));
  writeFileSync(path.join(dir, 'file'), 'x');
  it.each([
    ['--report', `${dir}/file/r.json`, `${dir}/file is not a folder`],
    ['--report', '/proc/r.json', 'cannot create files in /proc (ENOENT)'],
    ['--report', `${dir}/missing/dir/r.json`, `folder ${dir}/missing/dir does not exist (create it first)`],
    ['--model-out', dir, 'is a folder'],
    ['--model-out', `${dir}/file/m.onnx`, `${dir}/file is not a folder`],
    ['--checkpoint', `${dir}/file/x/c.ckpt`, `${dir}/file is not a folder`],
    ['--checkpoint', '/proc/c.ckpt', 'cannot create files in /proc (ENOENT)'],
  ])('simulate %s %s: refused at once, nothing created', async (option, file, why) => {
    const t0 = Date.now();
    const r = await fedgate(['simulate', '--rounds', '1', '--clients', '2', option, file]);
    expect(r.stderr).toBe(`fedgate: ${option} ${file}: ${why}\n`);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(Date.now() - t0).toBeLessThan(5_000); // no training first
    expect(existsSync(`${dir}/missing`)).toBe(false);
  });

  it('the aggregator and virtual mode check them too', async () => {
    const agg = await fedgate(['aggregator', '--broker', 'mqtt://127.0.0.1:1', '--report', '/proc/r.json']);
    expect(agg.stderr).toBe('fedgate: --report /proc/r.json: cannot create files in /proc (ENOENT)\n');
    expect(agg.code).toBe(1);
    const virtual = await fedgate(['simulate', '--mode', 'virtual', '--report', `${dir}/missing/r.json`]);
    expect(virtual.stderr).toBe(`fedgate: --report ${dir}/missing/r.json: folder ${dir}/missing does not exist (create it first)\n`);
    expect(virtual.code).toBe(1);
    const unused = await fedgate(['simulate', '--mode', 'virtual', '--checkpoint', 'c', '--model-out', 'm.onnx']);
    expect(unused.stderr).toBe('fedgate: --checkpoint, --model-out: not available with --mode virtual (it runs no broker and keeps no checkpoint or model)\n');
    expect(unused.code).toBe(1);
    // Regression: the documented "no model", `--model-out ''`, was refused the same way.
    const none = await fedgate(['simulate', '--mode', 'virtual', '--model-out', '', '--strategy', 'fedavg', '--clients', '2', '--clients-per-round', '2', '--tiers', 'x86', '--partition', 'iid', '--rounds', '1', '--max-samples', '50', '--epochs', '1', '--hidden', '16'], { ms: 60_000 });
    expect(none.code, none.stderr).toBe(0);
    expect(none.stdout).toMatch(/^round 1\/1  t=\S+ s  participants 2\/2  [^]*\ndone: 1 round, /);
  }, 60_000);
});

describe('checkpoints', () => {
  it('an existing one is not overwritten without --resume or --fresh; --resume of a finished job says there is nothing to do', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-cli-ckpt-'));
    const ckpt = path.join(dir, 'c.ckpt');
    const base = ['simulate', '--clients', '2', '--max-samples', '200', '--hidden', '16', '--model-out', '', '--checkpoint', ckpt];
    const first = await fedgate([...base, '--rounds', '1'], { ms: 60_000 });
    expect(first.code, first.stderr).toBe(0);
    const written = statSync(ckpt).mtimeMs;

    const again = await fedgate([...base, '--rounds', '1']);
    expect(again.stderr).toBe(`fedgate: --checkpoint ${ckpt} already exists: --resume continues from it, --fresh starts over and overwrites it\n`);
    expect(again.code).toBe(1);

    const done = await fedgate([...base, '--rounds', '1', '--resume', '--report', path.join(dir, 'r.json')]);
    expect(done.stdout).toBe(`nothing to do: checkpoint ${ckpt} already holds round 1, and the job asks for 1 round (ask for more rounds to train on; nothing was written)\n`);
    expect(done.code).toBe(0);
    expect(existsSync(path.join(dir, 'r.json'))).toBe(false);

    // Regression: with the rounds from job.rounds of a settings file, it said "--rounds is 1", a flag never given.
    const settings = path.join(dir, 'aggregator.yaml');
    writeFileSync(settings, `stateDir: ${dir}\njob:\n  rounds: 1\n  checkpoint: ${ckpt}\n  resume: always\n`);
    const fromFile = await fedgate(['aggregator', '--config', settings, '--broker', 'mqtt://127.0.0.1:1']);
    expect(fromFile.stdout).toBe(`nothing to do: checkpoint ${ckpt} already holds round 1, and the job asks for 1 round (ask for more rounds to train on; nothing was written)\n`);
    expect(fromFile.code, fromFile.stderr).toBe(0);

    // Regression: "checkpoint has 12730 params, the model 25450", naming neither models nor the way out.
    const other = await fedgate([...base.map((a) => (a === '16' ? '32' : a)), '--rounds', '2', '--resume'], { ms: 60_000 });
    expect(other.stderr).toBe(`fedgate: checkpoint ${ckpt} holds a 784-16-10 model (12730 params), this job's is 784-32-10 (25450 params): resume with the --dataset and --hidden it was made with, or --fresh to start over\n`);
    expect(other.code).toBe(1);
    expect(statSync(ckpt).mtimeMs).toBe(written);

    const both = await fedgate([...base, '--resume', '--fresh']);
    expect(both.stderr).toBe('fedgate: --resume and --fresh exclude each other: continue from the checkpoint, or start over\n');
    expect(statSync(ckpt).mtimeMs).toBe(written);

    const fresh = await fedgate([...base, '--rounds', '1', '--fresh'], { ms: 60_000 });
    expect(fresh.code, fresh.stderr).toBe(0);
    expect(fresh.stdout).toMatch(/^round 1\/1  participants 2\/2 /);
    expect(statSync(ckpt).mtimeMs).toBeGreaterThan(written);

    const missing = await fedgate(['simulate', '--resume', '--checkpoint', path.join(dir, 'none.ckpt')]);
    expect(missing.stderr).toBe(`fedgate: --resume: checkpoint ${path.join(dir, 'none.ckpt')} does not exist\n`);
  }, 120_000);

  // A service restarted by systemd runs the same command again: it must continue, not refuse.
  it('--resume auto starts fresh without a checkpoint, continues from one, and says when it is done', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-cli-auto-'));
    const ckpt = path.join(dir, 'c.ckpt');
    const base = ['simulate', '--clients', '2', '--max-samples', '200', '--hidden', '16', '--model-out', '', '--checkpoint', ckpt, '--resume', 'auto'];
    const first = await fedgate([...base, '--rounds', '1'], { ms: 60_000 });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/^round 1\/1  participants 2\/2 /);
    const second = await fedgate([...base, '--rounds', '2'], { ms: 60_000 });
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/^round 2\/2  participants 2\/2 /);
    expect(second.stdout).not.toMatch(/round 1\/2/);
    const third = await fedgate([...base, '--rounds', '2']);
    expect(third.stdout).toBe(`nothing to do: checkpoint ${ckpt} already holds round 2, and the job asks for 2 rounds (ask for more rounds to train on; nothing was written)\n`);
    const bad = await fedgate(['simulate', '--resume', 'maybe', '--checkpoint', ckpt]);
    expect(bad.stderr).toBe(`error: option '--resume [when]' argument 'maybe' is invalid. 'maybe' is not a way to resume: give --resume alone, or --resume auto\n(see fedgate simulate --help)\n`);
    expect(bad.code).toBe(1);
  }, 180_000);

  it('relative paths in the aggregator\'s settings file are in its state directory (under systemd the working directory is /)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-cli-agg-'));
    const stateDir = path.join(dir, 'state');
    const file = path.join(dir, 'aggregator.yaml');
    writeFileSync(file, `stateDir: ${stateDir}\njob:\n  checkpoint: c.ckpt\n  resume: never\n`);
    // The state directory is created; an existing checkpoint there is found (and not overwritten).
    const first = await fedgate(['aggregator', '--config', file, '--broker', 'mqtt://127.0.0.1:1'], { cwd: tmpdir() });
    expect(existsSync(stateDir)).toBe(true);
    expect(first.stderr).toMatch(/could not connect to the MQTT broker/);
    writeFileSync(path.join(stateDir, 'c.ckpt'), 'x');
    const second = await fedgate(['aggregator', '--config', file, '--broker', 'mqtt://127.0.0.1:1'], { cwd: tmpdir() });
    expect(second.stderr).toBe(`fedgate: --checkpoint ${path.join(stateDir, 'c.ckpt')} already exists: --resume continues from it, --fresh starts over and overwrites it\n`);
    expect(readFileSync(path.join(stateDir, 'c.ckpt'), 'utf8')).toBe('x');
  }, 60_000);

  // Regression: Node's recursive mkdir looped for ever at full CPU on /proc/nope (ENOENT from procfs).
  it('a state directory that cannot be made is one line and exit 78, not a hang', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-cli-aggproc-'));
    const file = path.join(dir, 'aggregator.yaml');
    writeFileSync(file, 'stateDir: /proc/nope\njob:\n  checkpoint: c.ckpt\n');
    const r = await fedgate(['aggregator', '--config', file, '--broker', 'mqtt://127.0.0.1:1'], { ms: 15_000 });
    expect(r.stderr).toBe('fedgate: cannot create the state directory /proc/nope (stateDir / --state-dir): /proc does not take new folders (mkdir /proc/nope: ENOENT)\n');
    expect(r.code).toBe(78);
  }, 30_000);
});

describe('FEMNIST from --data-dir', () => {
  const env = { FEDGATE_DATA_DIR: '' }; // the default, whatever this shell has set
  const femnist = path.join(path.resolve(__dirname, '../../shared/data'), 'femnist');
  const quick = ['simulate', '--dataset', 'femnist', '--rounds', '1', '--clients', '2', '--max-samples', '100', '--hidden', '16', '--model-out', ''];

  it.skipIf(!existsSync(femnist)).each([
    ['the femnist folder itself', ['--data-dir', femnist]],
    ['the folder holding femnist/', ['--data-dir', path.dirname(femnist)]],
    ['the default (../shared/data from the package), run from another folder', []],
  ])('%s', async (_what, extra) => {
    if (!process.env.FEDGATE_DATA_DIR) expect(defaultDataDir()).toBe(path.dirname(femnist));
    const r = await fedgate([...quick, ...extra], { cwd: tmpdir(), env, ms: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^round 1\/1  participants 2\/2  /);
  }, 60_000);

  it('a folder without it: one line saying where it looked', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-cli-nodata-'));
    const r = await fedgate([...quick, '--data-dir', dir], { env });
    expect(r.stderr).toBe(`fedgate: FEMNIST not found: no train-images-idx3-ubyte.gz in ${dir}/femnist or ${dir} (--data-dir)\n`);
    expect(r.code).toBe(1);
    const fromEnv = await fedgate(quick, { env: { FEDGATE_DATA_DIR: dir } });
    expect(fromEnv.stderr).toBe(`fedgate: FEMNIST not found: no train-images-idx3-ubyte.gz in ${dir}/femnist or ${dir} ($FEDGATE_DATA_DIR)\n`);
  });
});

describe('values that used to pass silently', () => {
  it.each([
    [[{ tier: 'pi3' }], 'devices[0].id: every device needs an id (a non-empty string)'],
    [[{ id: 'gw-a', tier: 'pi3' }, { id: '', tier: 'pi4' }], 'devices[1].id: every device needs an id (a non-empty string)'],
    [[{ id: 'gw-a', tier: 'pi3' }, { id: 'gw-b', tier: 'pi4' }, { id: 'gw-a', tier: 'x86' }], 'devices[2].id: "gw-a" is already the id of devices[0]'],
  ])('a trace %j is refused', async (devices, why) => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'fg-cli-trace-')), 'trace.json');
    writeFileSync(file, JSON.stringify({ devices }));
    const r = await fedgate(['simulate', '--mode', 'virtual', '--trace', file, '--rounds', '1']);
    expect(r.stderr).toBe(`fedgate: trace ${file}: ${why}\n`);
    expect(r.code).toBe(1);
  });

  it.each(['--broker', '--username', '--fleet'])('broker refuses %s (it would mean nothing there)', async (flag) => {
    const r = await fedgate(['broker', '--port', '0', flag, 'x']);
    expect(r.stderr).toBe(`error: unknown option '${flag}'\n(see fedgate broker --help)\n`);
    expect(r.code).toBe(1);
  });

  it('broker --host 0.0.0.0 warns that it exposes an unauthenticated broker; loopback does not', async () => {
    for (const [host, warned] of [['0.0.0.0', true], ['127.0.0.1', false]] as const) {
      const run = startFedgate(['broker', '--host', host, '--port', '0']);
      try {
        await until(() => run.out.stdout.includes('broker listening on'), 10_000, 'broker up');
        await new Promise((r) => setTimeout(r, 200));
        const port = /:(\d+)\n$/.exec(run.out.stdout)![1];
        expect(run.out.stdout).toBe(`broker listening on mqtt://${host}:${port}\n`);
        expect(run.out.stderr).toBe(warned ? `fedgate: WARNING: the embedded broker has no authentication and no TLS, and --host 0.0.0.0 exposes it beyond this machine: anyone who reaches port ${port} can read every update and send any task. For a network, use mosquitto with broker-config/ (users, ACL, TLS).\n` : '');
      } finally {
        run.child.kill('SIGTERM');
        expect(await run.exited).toEqual({ code: 0, signal: null });
      }
    }
  });
});

describe('an unreachable broker', () => {
  it('is one clear line at the default log level, not a raw warning per attempt first', async () => {
    const url = `mqtt://127.0.0.1:${await freePort()}`;
    const r = await fedgate(['aggregator', '--broker', url, '--rounds', '1', '--hidden', '16', '--model-out', ''], { ms: 30_000 });
    expect(r.stderr).toBe(`fedgate: could not connect to the MQTT broker at ${url} within 10000 ms\n`);
    expect(r.code).toBe(1);
  }, 30_000);
});

// Regression: without --config the agent took its environment unchecked: a bad value was dropped
// silently and a misspelt name ignored without a word.
describe('the agent\'s environment without --config', () => {
  it('a bad value is refused with the variable named, before anything starts', async () => {
    const r = await fedgate(['agent', '--broker', 'mqtt://127.0.0.1:1', '--state-dir', mkdtempSync(path.join(tmpdir(), 'fg-cli-env-'))], { env: { FEDGATE_TRAINING_THREADS: 'four' } });
    expect(r.stderr).toBe('fedgate: invalid configuration (1 error):\n  FEDGATE_TRAINING_THREADS: "four" is not an integer (sets training.threads)\n');
    expect(r.code).toBe(1);
  });

  it('a misspelt name is warned of with the real one', async () => {
    const run = startFedgate(['agent', '--broker', 'mqtt://127.0.0.1:1', '--state-dir', mkdtempSync(path.join(tmpdir(), 'fg-cli-env-'))], { FEDGATE_TRAINING_MAXCPULOAD: '1' });
    try {
      await until(() => run.out.stderr.includes('starting agent'), 15_000, 'agent starting');
      const warning = run.out.stderr.split('\n').map((l) => { try { return JSON.parse(l); } catch { return {}; } }).find((l) => l.level === 40);
      expect(warning?.msg).toBe('FEDGATE_TRAINING_MAXCPULOAD is not a fedgate variable and is ignored; did you mean FEDGATE_TRAINING_MAX_CPU_LOAD?');
    } finally {
      run.child.kill('SIGKILL');
    }
  });
});

// Regression: --max-samples was ignored in virtual mode.
it('simulate --mode virtual caps each device at --max-samples rows', async () => {
  const r = await fedgate(['simulate', '--mode', 'virtual', '--clients', '4', '--partition', 'iid', '--strategy', 'fedavg', '--rounds', '1', '--max-samples', '100', '--epochs', '1', '--hidden', '16', '--tiers', 'x86'], { ms: 60_000 });
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toMatch(/^round 1\/1  t=\S+ s  participants \d\/\d  work 4-4 steps  /); // 1 epoch of 100 rows at batch 32: 4 steps
}, 60_000);

// Regression: the agent's settings refused data.partition "owner", so every gateway of a
// `simulate --partition owner` exited 1; with MNIST (no owners) each gateway failed on its own.
describe('--partition owner', () => {
  const femnist = path.join(path.resolve(__dirname, '../../shared/data'), 'femnist');
  const env = { FEDGATE_DATA_DIR: '' };

  it.skipIf(!existsSync(femnist))('gives each FEMNIST gateway whole writers, in processes mode', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-cli-owner-'));
    const r = await fedgate(['simulate', '--dataset', 'femnist', '--data-dir', path.dirname(femnist), '--partition', 'owner', '--clients', '3', '--rounds', '2',
      '--max-samples', '300', '--hidden', '16', '--epochs', '1', '--model-out', '', '--report', path.join(dir, 'r.json')], { env, ms: 90_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^round 1\/2  participants 3\/3  [^\n]*\nround 2\/2  participants 3\/3  [^\n]*\ndone: 2 rounds /);
    expect(JSON.parse(readFileSync(path.join(dir, 'r.json'), 'utf8')).config.partition).toBe('owner');
  }, 90_000);

  it.each([['processes'], ['virtual']])('with MNIST (no owners) is refused at once in %s mode, in one line', async (mode) => {
    const r = await fedgate(['simulate', '--mode', mode, '--partition', 'owner', '--clients', '2', '--rounds', '1']);
    expect(r.stderr).toBe('fedgate: --partition owner: mnist has no owners (FEMNIST has writers); use --dataset femnist, or --partition iid or dirichlet:<alpha>\n');
    expect(r.stdout).toBe('');
    expect(r.code).toBe(1);
  });

  it.skipIf(!existsSync(femnist))('with more gateways than writers is refused at once', async () => {
    const args = ['simulate', '--dataset', 'femnist', '--data-dir', femnist, '--partition', 'owner', '--clients', '106', '--rounds', '1'];
    const processes = await fedgate(args, { env });
    expect(processes.stderr).toBe('fedgate: --partition owner: --clients 106 is more than the 105 FEMNIST writers (each gateway holds whole writers); use at most 105\n');
    expect(processes.code).toBe(1);
    const virtual = await fedgate([...args, '--mode', 'virtual'], { env, ms: 60_000 });
    expect(virtual.stderr).toBe('fedgate: --partition owner: --clients 106 is more than the 105 writers of femnist (each device holds whole writers); use at most 105\n');
    expect(virtual.code).toBe(1);
  }, 60_000);

  it('fedgate agent --help lists owner, and says where its log level comes from', async () => {
    const r = await fedgate(['agent', '--help']);
    const help = r.stdout.replace(/\s+/g, ' ');
    expect(help).toContain('--partition <spec> how the data set is split over the n shards: iid, dirichlet:<alpha>, or owner ');
    // Regression: it said default "warn", but the agent logs at logging.level (default info).
    expect(help).toContain('--log-level <level> log level (default: logging.level of --config or $FEDGATE_LOG_LEVEL, else info) (choices: "fatal", "error", "warn", "info", "debug", "trace", "silent") ');
  });
});

describe('simulate --mode virtual', () => {
  // Regression: a run no device ever took part in printed "done: …" with the untrained model's accuracy, exit 0, and wrote its report.
  it('fails when no device took part, as processes mode does, and writes no report', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-cli-never-'));
    const trace = path.join(dir, 'never.json');
    writeFileSync(trace, JSON.stringify({ devices: [{ id: 'gw-a', tier: 'x86', availability: [] }] }));
    const r = await fedgate(['simulate', '--mode', 'virtual', '--trace', trace, '--rounds', '2', '--hidden', '16', '--report', path.join(dir, 'nv.json')], { ms: 60_000 });
    // No device is ever online: the clock does not step through empty rounds, the run ends at once.
    expect(r.stdout).toBe('idle from t=0.0 s: no device comes online again; the run ends\n');
    expect(r.stderr).toBe(`fedgate: no device was online before the run ended: check the devices' availability windows in ${trace} (no report written)\n`);
    expect(r.code).toBe(1);
    expect(readdirSync(dir)).toEqual(['never.json']);
  }, 60_000);

  // Regression: --time-budget without --rounds stopped at the default 20 rounds.
  it('with --time-budget and no --rounds, the budget alone ends the run', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-cli-budget-'));
    const trace = path.join(dir, 'fleet.json');
    writeFileSync(trace, JSON.stringify({ devices: [{ id: 'gw-a', tier: 'x86' }, { id: 'gw-b', tier: 'x86' }] }));
    const base = ['simulate', '--mode', 'virtual', '--trace', trace, '--time-budget', '20', '--strategy', 'fedavg', '--max-samples', '32', '--epochs', '1', '--hidden', '16'];
    const r = await fedgate(base, { ms: 90_000 });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const rounds = lines.filter((l) => l.startsWith('round '));
    expect(rounds.length).toBeGreaterThan(20);
    expect(rounds[0]).toMatch(/^round 1  t=/);
    const ends = rounds.map((l) => Number(/ t=(\S+) s/.exec(l)![1]));
    expect(ends.at(-2)!).toBeLessThan(20); // each round starts within the budget
    expect(ends.at(-1)!).toBeGreaterThanOrEqual(20);
    expect(lines.at(-1)).toMatch(new RegExp(`^done: ${rounds.length} rounds, `));
    const capped = await fedgate([...base, '--rounds', '3'], { ms: 60_000 });
    expect(capped.stdout.split('\n').filter((l) => l.startsWith('round '))).toEqual([expect.stringMatching(/^round 1\/3 /), expect.stringMatching(/^round 2\/3 /), expect.stringMatching(/^round 3\/3 /)]);
  }, 150_000);
});

// Regression: a top-k run said "0.0 MB up" in its summary while each round said "up 0.02 MB".
it('the done: line gives small byte totals in kB, as the rounds add up', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fg-cli-topk-'));
  const r = await fedgate(['simulate', '--clients', '2', '--rounds', '2', '--codec', 'topk:0.01', '--max-samples', '200', '--hidden', '16', '--model-out', '', '--report', path.join(dir, 'r.json')], { ms: 60_000 });
  expect(r.code, r.stderr).toBe(0);
  const report = JSON.parse(readFileSync(path.join(dir, 'r.json'), 'utf8'));
  const up = report.rounds.reduce((s: number, x: { bytesUp: number }) => s + x.bytesUp, 0);
  expect(up).toBeLessThan(1e6);
  expect(r.stdout).toMatch(new RegExp(`\\ndone: 2 rounds in \\S+ s, final accuracy \\S+, loss \\S+, ${(up / 1e3).toFixed(1).replace('.', '\\.')} kB up, \\S+ (kB|MB) down\\n$`));
}, 60_000);
