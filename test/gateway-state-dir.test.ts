import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MAIN, ROOT, startAgent, type CliResult } from './helpers/gateway';

/**
 * The agent's state directory as a real agent process sees it: a directory that belongs to another
 * node id, or one that cannot be created, stops the agent at once with one line and exit status 78
 * (EX_CONFIG, which the systemd units do not restart).
 */
const missing = existsSync(MAIN) ? undefined : 'dist/ is not built (npx tsc -p tsconfig.json)';
const suite = missing ? describe.skip : describe;
if (missing) it.skip(`gateway state directory: ${missing}`, () => undefined);

const tmp = (name: string) => mkdtempSync(path.join(tmpdir(), `fg-gw-sd-${name}-`));
// No broker: these agents stop before connecting (or are stopped while they wait for one).
const NO_BROKER = 'mqtt://127.0.0.1:1';

/** `fedgate agent <args>` to its end (killed after 20 s), as `uid` if given. */
function agent(args: string[], uid?: number): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [MAIN, 'agent', '--broker', NO_BROKER, '--max-samples', '100', ...args], {
      cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], ...(uid !== undefined ? { uid, gid: uid } : {}),
    });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), 20_000);
    c.on('error', reject);
    c.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

suite('the agent\'s state directory (real agent processes)', { timeout: 60_000 }, () => {
  // Regression: `--node-id gw-5 --state-dir st/gw-0` rewrote st/gw-0/node-id and gw-5 silently took
  // over gw-0's applied config layers and versions, its outbox and its error-feedback residual.
  it('one that belongs to another node id is refused: exit 78, one line naming both and the way out, nothing changed', async () => {
    const dir = tmp('other');
    const first = startAgent(['--broker', NO_BROKER, '--node-id', 'gw-0', '--state-dir', dir, '--max-samples', '100', '--log-level', 'info']);
    await first.waitForLog('starting agent');
    first.kill('SIGTERM');
    expect(await first.exited).toEqual({ code: 0, signal: null });
    expect(readFileSync(path.join(dir, 'node-id'), 'utf8')).toBe('gw-0\n');
    const before = readdirSync(dir).sort();

    const r = await agent(['--node-id', 'gw-5', '--state-dir', dir]);
    expect(r.code, r.stderr).toBe(78);
    expect(r.stderr).toBe(`fedgate: state directory ${dir} belongs to node id gw-0, not gw-5: its applied configuration, outbox and residual are gw-0's; use --node-id gw-0 (node.id), another --state-dir (stateDir) for gw-5, or empty the directory\n`);
    expect(readFileSync(path.join(dir, 'node-id'), 'utf8')).toBe('gw-0\n');
    expect(readdirSync(dir).sort()).toEqual(before); // and the lock was released

    // The ways out: its own id, or an empty directory.
    const same = startAgent(['--broker', NO_BROKER, '--node-id', 'gw-0', '--state-dir', dir, '--max-samples', '100', '--log-level', 'info']);
    await same.waitForLog('starting agent', (l) => l.node === 'gw-0');
    same.kill('SIGTERM');
    expect(await same.exited).toEqual({ code: 0, signal: null });
    for (const f of readdirSync(dir)) rmSync(path.join(dir, f), { recursive: true });
    const emptied = startAgent(['--broker', NO_BROKER, '--node-id', 'gw-5', '--state-dir', dir, '--max-samples', '100', '--log-level', 'info']);
    await emptied.waitForLog('starting agent', (l) => l.node === 'gw-5');
    emptied.kill('SIGTERM');
    expect(await emptied.exited).toEqual({ code: 0, signal: null });
    expect(readFileSync(path.join(dir, 'node-id'), 'utf8')).toBe('gw-5\n');
  });

  // Regression: `--state-dir /proc/nope` hung for ever at 86 % CPU (Node's recursive mkdir loops on ENOENT from procfs).
  it('one that cannot be created (/proc/nope, a file in the way): exit 78 at once, one line naming the path and the setting', async () => {
    const t0 = Date.now();
    const proc = await agent(['--node-id', 'gw-1', '--state-dir', '/proc/nope']);
    expect(proc.code, proc.stderr).toBe(78);
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(proc.stderr).toBe('fedgate: cannot create the state directory /proc/nope (stateDir / --state-dir): /proc does not take new folders (mkdir /proc/nope: ENOENT)\n');

    const file = path.join(tmp('file'), 'a-file');
    writeFileSync(file, 'x');
    const below = await agent(['--node-id', 'gw-1', '--state-dir', path.join(file, 'state')]);
    expect(below.code, below.stderr).toBe(78);
    expect(below.stderr).toBe(`fedgate: cannot create the state directory ${path.join(file, 'state')} (stateDir / --state-dir): ${file} is not a directory\n`);

    // The same from the settings file.
    const settings = path.join(tmp('settings'), 'agent.yaml');
    writeFileSync(settings, 'stateDir: /proc/nope\n');
    const fromFile = await agent(['--config', settings, '--node-id', 'gw-1']);
    expect(fromFile.code, fromFile.stderr).toBe(78);
    expect(fromFile.stderr).toBe('fedgate: cannot create the state directory /proc/nope (stateDir / --state-dir): /proc does not take new folders (mkdir /proc/nope: ENOENT)\n');
  });

  // As root the agent runs as nobody, who must be able to read fedgate's files: not so in a clone
  // under a private folder (mktemp -d is 0700), as on CI.
  const root = process.getuid?.() === 0;
  const nobodyCannotRun = root && spawnSync(process.execPath, [MAIN, '--help'], { cwd: ROOT, uid: 65534, gid: 65534 }).status !== 0
    ? `as root this runs the agent as nobody (65534), who cannot read ${ROOT} (a folder above it is private)` : undefined;
  if (nobodyCannotRun) it.skip(`no permission (EACCES): ${nobodyCannotRun}`, () => undefined);
  it.skipIf(nobodyCannotRun !== undefined)('no permission (EACCES): exit 78, one line saying where', async () => {
    const parent = tmp('eacces');
    // As root a permission is no obstacle: the agent runs as nobody (65534) instead, in a folder it may read but not write.
    mkdirSync(path.join(parent, 'closed'), { mode: 0o700 }); // before the parent is closed to its owner
    if (root) chmodSync(parent, 0o755);
    else chmodSync(parent, 0o500);
    if (!root) chmodSync(path.join(parent, 'closed'), 0o000);
    const uid = root ? 65534 : undefined;
    try {
      const create = await agent(['--node-id', 'gw-1', '--state-dir', path.join(parent, 'state')], uid);
      expect(create.code, create.stderr).toBe(78);
      expect(create.stderr).toBe(`fedgate: cannot create the state directory ${path.join(parent, 'state')} (stateDir / --state-dir): no permission to create ${path.join(parent, 'state')} (EACCES)\n`);
      const look = await agent(['--node-id', 'gw-1', '--state-dir', path.join(parent, 'closed', 'state')], uid);
      expect(look.code, look.stderr).toBe(78);
      expect(look.stderr).toBe(`fedgate: cannot create the state directory ${path.join(parent, 'closed', 'state')} (stateDir / --state-dir): no permission to look into ${path.join(parent, 'closed')} (EACCES)\n`);
      const write = await agent(['--node-id', 'gw-1', '--state-dir', parent], uid);
      expect(write.code, write.stderr).toBe(78);
      expect(write.stderr).toBe(`fedgate: cannot write in the state directory ${parent} (stateDir / --state-dir): permission denied (EACCES)\n`);
    } finally {
      chmodSync(parent, 0o700);
      chmodSync(path.join(parent, 'closed'), 0o700);
    }
  });
});
