import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { logger } from '../log';
import { PermanentConfigError } from '../service/exit';
import { readStateFile, removeTempFiles, writeFileAtomic } from './atomic';
import { acquireLock, type StateLock } from './lock';
import { resolveNodeId, type NodeIdSource } from './node-id';
import { readAppliedConfig, writeAppliedConfig, type AppliedConfig } from './applied-config';
import { Outbox, type OutboxOptions } from './outbox';

export const RESIDUAL_FILE = 'residual.fgef';
export const OUTBOX_DIR = 'outbox';
export const SESSION_FILE = 'session';

/**
 * Where the state lives: the configured directory, else `$STATE_DIRECTORY` (set by systemd's
 * StateDirectory=; the first one if there are several), else ./fedgate-state. Always absolute.
 */
export function resolveStateDir(configured?: string, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): string {
  if (configured) return path.resolve(cwd, configured);
  const fromSystemd = env.STATE_DIRECTORY?.split(':').find(Boolean);
  return path.resolve(cwd, fromSystemd ?? 'fedgate-state');
}

/** Where a state directory's path came from, for error messages: the setting, systemd, or the default. */
function settingOf(configured: string | undefined, env: NodeJS.ProcessEnv): string {
  if (configured) return 'stateDir / --state-dir';
  if (env.STATE_DIRECTORY?.split(':').find(Boolean)) return '$STATE_DIRECTORY, from systemd\'s StateDirectory=; stateDir / --state-dir overrides it';
  return 'the default ./fedgate-state; stateDir / --state-dir sets another';
}

const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;

/**
 * Creates `dir` (mode 0700) and any missing parents, one level at a time from the nearest existing
 * ancestor, each with a plain (non-recursive) mkdir. Node's recursive mkdir loops for ever, at full
 * CPU, on some ENOENTs (procfs: `/proc/nope`); here every failure is one PermanentConfigError that
 * names the path, why, and the setting it came from.
 */
async function makeStateDir(dir: string, setting: string): Promise<void> {
  const fail = (why: string) => new PermanentConfigError(`cannot create the state directory ${dir} (${setting}): ${why}`);
  const missing: string[] = [];
  for (let at = dir; ; at = path.dirname(at)) {
    let isDir: boolean;
    try {
      isDir = (await fs.stat(at)).isDirectory();
    } catch (err) {
      const code = errno(err);
      // ENOTDIR: a file further up; found as the nearest existing ancestor below.
      if ((code === 'ENOENT' || code === 'ENOTDIR') && path.dirname(at) !== at) {
        missing.unshift(at);
        continue;
      }
      if (code === 'EACCES' || code === 'EPERM') throw fail(`no permission to look into ${path.dirname(at)} (${code})`);
      throw fail((err as Error).message);
    }
    if (!isDir) throw fail(`${at} is not a directory`);
    break;
  }
  for (const level of missing) {
    try {
      await fs.mkdir(level, { mode: 0o700 });
    } catch (err) {
      const code = errno(err);
      const parent = path.dirname(level);
      if (code === 'EEXIST' && (await fs.stat(level).then((st) => st.isDirectory(), () => false))) continue; // made meanwhile by another process
      if (code === 'EACCES' || code === 'EPERM') throw fail(`no permission to create ${level} (${code})`);
      if (code === 'EROFS') throw fail(`${parent} is on a read-only file system (EROFS)`);
      if (code === 'ENOENT') throw fail(`${parent} does not take new folders (mkdir ${level}: ENOENT)`);
      throw fail(`mkdir ${level}: ${(err as Error).message}`);
    }
  }
}

/** Creates the state directory `resolveStateDir(configured, env)` names, as the agent does; returns its path. */
export async function ensureStateDir(configured?: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const dir = resolveStateDir(configured, env);
  await makeStateDir(dir, settingOf(configured, env));
  return dir;
}

export interface StateDirOptions {
  /** The `stateDir` setting; see resolveStateDir. */
  dir?: string;
  env?: NodeJS.ProcessEnv;
  outbox?: OutboxOptions;
}

/**
 * A process's state directory, locked for as long as it is open:
 *
 *   lock                   pid of the process using it
 *   node-id                this gateway's id (agent)
 *   applied-config.json    the config last applied over MQTT, with its version
 *   residual.fgef          error-feedback residuals (written by agent/compress ErrorFeedback.save)
 *   outbox/                updates not yet delivered
 *   session                the last session number (grows on every start, whatever the clock says)
 */
export class StateDir {
  private constructor(readonly dir: string, private readonly lock: StateLock, readonly outbox: Outbox) {}

  /**
   * Creates the directory (mode 0700) if needed and locks it (StateLockedError if in use). A
   * directory that cannot be created, or written to, is a PermanentConfigError (exit status 78).
   */
  static async open(opts: StateDirOptions = {}): Promise<StateDir> {
    const env = opts.env ?? process.env;
    const dir = resolveStateDir(opts.dir, env);
    const setting = settingOf(opts.dir, env);
    await makeStateDir(dir, setting);
    let lock: StateLock;
    try {
      lock = await acquireLock(dir);
    } catch (err) {
      const code = errno(err);
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
        throw new PermanentConfigError(`cannot write in the state directory ${dir} (${setting}): ${code === 'EROFS' ? 'read-only file system' : 'permission denied'} (${code})`);
      }
      throw err;
    }
    try {
      const leftovers = await removeTempFiles(dir);
      if (leftovers.length) logger('state').warn({ dir, files: leftovers }, 'removed unfinished writes left by a crash');
      const outbox = await Outbox.open(path.join(dir, OUTBOX_DIR), opts.outbox);
      return new StateDir(dir, lock, outbox);
    } catch (err) {
      await lock.release();
      throw err;
    }
  }

  /** Where ErrorFeedback keeps its residuals between rounds and restarts. */
  get residualFile(): string {
    return path.join(this.dir, RESIDUAL_FILE);
  }

  /** The node id: from config if given, else the stored one, else generated once and stored. */
  nodeId(configured?: string): Promise<{ id: string; source: NodeIdSource }> {
    return resolveNodeId(this.dir, configured);
  }

  appliedConfig(): Promise<AppliedConfig | undefined> {
    return readAppliedConfig(this.dir);
  }

  saveAppliedConfig(version: number, config: Record<string, unknown>, sources?: Record<string, number>): Promise<AppliedConfig> {
    return writeAppliedConfig(this.dir, version, config, sources);
  }

  /**
   * A session number for this start that is higher than any before it on this device, even if the
   * clock went backwards (a gateway without a real-time clock boots in 1970 until NTP answers):
   * max(now, last + 1), stored. The aggregator ignores states of older sessions as stale.
   */
  async nextSession(now = Date.now()): Promise<number> {
    const file = path.join(this.dir, SESSION_FILE);
    const last = await readStateFile(file, (b) => {
      const n = Number(b.toString('utf8').trim());
      if (!Number.isSafeInteger(n) || n < 0) throw new Error(`not a session number: ${JSON.stringify(b.toString('utf8').slice(0, 40))}`);
      return n;
    });
    const session = Math.max(now, (last ?? 0) + 1);
    await writeFileAtomic(file, `${session}\n`);
    return session;
  }

  /** Releases the lock. */
  close(): Promise<void> {
    return this.lock.release();
  }
}
