import { promises as fs, readFileSync, unlinkSync } from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';

export const LOCK_FILE = 'lock';

/** Another live process holds the state directory. */
export class StateLockedError extends Error {
  override readonly name = 'StateLockedError';
  constructor(readonly dir: string, readonly pid: number) {
    super(`state directory ${dir} is in use by ${pid === process.pid ? 'this process' : `process ${pid}`}; two fedgate processes cannot share one state directory (give each its own stateDir, or stop the other one)`);
  }
}

interface Holder {
  pid: number;
  /** The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): tells a reused pid apart. */
  started?: string;
  host?: string;
  since?: string;
}

/** Lock files held by this process, for the exit handler and to refuse a second lock from here. */
const held = new Set<string>();
let exitHook = false;

function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function alive(h: Holder): boolean {
  // Our own pid in a lock we do not hold: left by an earlier run in a fresh pid namespace (a
  // container restarted: the agent is pid 1 again).
  if (h.pid === process.pid) return false;
  try {
    process.kill(h.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  const now = startTime(h.pid);
  return !(h.started && now && now !== h.started);
}

function parseHolder(text: string): Holder | undefined {
  try {
    const h = JSON.parse(text) as Holder;
    return Number.isSafeInteger(h.pid) && h.pid > 0 ? h : undefined;
  } catch {
    return undefined;
  }
}

export interface StateLock {
  readonly file: string;
  release(): Promise<void>;
}

/**
 * Takes `<dir>/lock` (created exclusively, holding this pid and its start time). A lock left by a
 * process that is gone (or whose pid now belongs to another process) is taken over; one held by a
 * live process gives a StateLockedError. Released by `release()` or, at the latest, on exit.
 */
export async function acquireLock(dir: string): Promise<StateLock> {
  const file = path.join(dir, LOCK_FILE);
  if (held.has(file)) throw new StateLockedError(dir, process.pid);
  const me: Holder = { pid: process.pid, started: startTime(process.pid), host: os.hostname(), since: new Date().toISOString() };
  for (let attempt = 0; ; attempt++) {
    try {
      await fs.writeFile(file, JSON.stringify(me) + '\n', { flag: 'wx', mode: 0o600 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 2) throw err;
    }
    const text = await fs.readFile(file, 'utf8').catch(() => '');
    const holder = parseHolder(text);
    // An unreadable lock is one whose writer died before finishing it: stale.
    if (holder && alive(holder)) throw new StateLockedError(dir, holder.pid);
    await fs.rm(file, { force: true });
  }
  held.add(file);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const f of held) {
        try {
          unlinkSync(f);
        } catch {
          // already gone
        }
      }
    });
  }
  return {
    file,
    async release() {
      if (!held.delete(file)) return;
      const holder = parseHolder(await fs.readFile(file, 'utf8').catch(() => ''));
      if (holder?.pid === process.pid) await fs.rm(file, { force: true });
    },
  };
}
