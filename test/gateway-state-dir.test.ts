import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MAIN, ROOT, startAgent, type CliResult } from './helpers/gateway';

/**
 * The agent's state directory as a real agent process sees it: a directory that belongs to another
 * node id stops the agent at once with one line and exit status 78 (EX_CONFIG, which the systemd
 * units do not restart).
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
});
