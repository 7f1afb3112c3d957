import { readFileSync } from 'node:fs';
import * as path from 'node:path';

/**
 * Limits a container (or a systemd slice) puts on this process, read from the cgroup files
 * directly: inside a container systeminformation and /proc/meminfo report the host's totals.
 * Both cgroup v2 (`memory.max`, `cpu.max`) and v1 (`memory.limit_in_bytes`, `cpu.cfs_quota_us`)
 * are read, at the process's own cgroup and every ancestor up to the mount (a limit set on a parent
 * applies too): the tightest level wins.
 */
export interface CgroupLimits {
  /** Tightest memory limit on this process, or null when none is set. */
  memoryLimitBytes: number | null;
  /** Headroom under that limit: limit minus the cgroup's working set (usage minus inactive file cache). */
  memoryAvailableBytes: number | null;
  /** CPU bandwidth limit in cores (quota / period; may be fractional), or null when none is set. */
  cpuQuotaCores: number | null;
}

export type ReadText = (file: string) => string | null;

export const readTextOrNull: ReadText = (file) => {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
};

/** v1 writes "no limit" as a huge page-rounded number (9223372036854771712). */
const UNLIMITED = 2 ** 60;

interface Mount { point: string; root: string }
interface Mounts { v2?: Mount; memory?: Mount; cpu?: Mount }

/** cgroup mounts from /proc/self/mountinfo: `id parent dev root point opts ... - fstype source superopts`. */
export function parseMounts(mountinfo: string): Mounts {
  const mounts: Mounts = {};
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!right) continue;
    const f = left.split(' ');
    const [fstype, , superopts = ''] = right.split(' ');
    const m = { root: f[3], point: f[4] };
    if (fstype === 'cgroup2') mounts.v2 ??= m;
    else if (fstype === 'cgroup') {
      const opts = superopts.split(',');
      if (opts.includes('memory')) mounts.memory ??= m;
      if (opts.includes('cpu')) mounts.cpu ??= m;
    }
  }
  return mounts;
}

/** From /proc/self/cgroup: the v2 path ("0::/path") and the v1 path per controller. */
export function parseProcCgroup(text: string): { v2?: string; v1: Record<string, string> } {
  const out: { v2?: string; v1: Record<string, string> } = { v1: {} };
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    if (m[1] === '0' && m[2] === '') out.v2 = m[3];
    else for (const c of m[2].split(',')) out.v1[c] = m[3];
  }
  return out;
}

/**
 * The directories to read, leaf first, up to the mount point. The cgroup path is relative to the
 * mount's root (a container without a cgroup namespace sees `/docker/<id>` in /proc/self/cgroup
 * while its /sys/fs/cgroup is that very directory); a path outside the mount falls back to it.
 */
export function cgroupDirs(mount: Mount, cgPath: string | undefined): string[] {
  let rel = cgPath ?? '/';
  if (mount.root !== '/' && (rel === mount.root || rel.startsWith(mount.root + '/'))) rel = rel.slice(mount.root.length) || '/';
  else if (mount.root !== '/') rel = '/';
  const dirs: string[] = [];
  let dir = path.posix.join(mount.point, rel).replace(/(.)\/+$/, '$1');
  for (;;) {
    dirs.push(dir);
    if (dir === mount.point || !dir.startsWith(mount.point)) break;
    dir = path.posix.dirname(dir);
  }
  return dirs;
}

function num(text: string | null): number | null {
  if (text === null) return null;
  const n = Number(text.trim());
  return text.trim() !== '' && Number.isFinite(n) ? n : null;
}

function statField(text: string | null, key: string): number {
  const m = text && new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

interface Level { limit: number | null; headroom: number | null; cpu: number | null }

function v2Level(dir: string, read: ReadText): Level {
  const max = read(`${dir}/memory.max`)?.trim();
  const limit = max === undefined || max === 'max' ? null : num(max);
  const current = num(read(`${dir}/memory.current`));
  const ws = current === null ? null : current - statField(read(`${dir}/memory.stat`), 'inactive_file');
  const [quota, period] = (read(`${dir}/cpu.max`) ?? '').trim().split(/\s+/);
  const cpu = quota && quota !== 'max' && Number(period) > 0 ? Number(quota) / Number(period) : null;
  return { limit, headroom: limit !== null && ws !== null ? limit - ws : null, cpu: Number.isFinite(cpu) ? cpu : null };
}

function v1MemoryLevel(dir: string, read: ReadText): Level {
  const raw = num(read(`${dir}/memory.limit_in_bytes`));
  const limit = raw !== null && raw > 0 && raw < UNLIMITED ? raw : null;
  const usage = num(read(`${dir}/memory.usage_in_bytes`));
  const ws = usage === null ? null : usage - statField(read(`${dir}/memory.stat`), 'total_inactive_file');
  return { limit, headroom: limit !== null && ws !== null ? limit - ws : null, cpu: null };
}

function v1CpuLevel(dir: string, read: ReadText): Level {
  const quota = num(read(`${dir}/cpu.cfs_quota_us`));
  const period = num(read(`${dir}/cpu.cfs_period_us`));
  const cpu = quota !== null && quota > 0 && period !== null && period > 0 ? quota / period : null;
  return { limit: null, headroom: null, cpu };
}

const minKnown = (a: number | null, b: number | null): number | null => (a === null ? b : b === null ? a : Math.min(a, b));

/** Reads the limits that apply to this process; every value is null where no limit is set or nothing is readable. */
export function readCgroupLimits(read: ReadText = readTextOrNull): CgroupLimits {
  const procCgroup = parseProcCgroup(read('/proc/self/cgroup') ?? '');
  const mountinfo = read('/proc/self/mountinfo');
  const mounts: Mounts = mountinfo
    ? parseMounts(mountinfo)
    : { v2: { point: '/sys/fs/cgroup', root: '/' }, memory: { point: '/sys/fs/cgroup/memory', root: '/' }, cpu: { point: '/sys/fs/cgroup/cpu', root: '/' } };
  const levels: Level[] = [];
  if (mounts.v2) for (const d of cgroupDirs(mounts.v2, procCgroup.v2)) levels.push(v2Level(d, read));
  if (mounts.memory) for (const d of cgroupDirs(mounts.memory, procCgroup.v1.memory)) levels.push(v1MemoryLevel(d, read));
  if (mounts.cpu) for (const d of cgroupDirs(mounts.cpu, procCgroup.v1.cpu)) levels.push(v1CpuLevel(d, read));
  let memoryLimitBytes: number | null = null;
  let memoryAvailableBytes: number | null = null;
  let cpuQuotaCores: number | null = null;
  for (const l of levels) {
    memoryLimitBytes = minKnown(memoryLimitBytes, l.limit);
    memoryAvailableBytes = minKnown(memoryAvailableBytes, l.headroom === null ? null : Math.max(0, l.headroom));
    cpuQuotaCores = minKnown(cpuQuotaCores, l.cpu);
  }
  return { memoryLimitBytes, memoryAvailableBytes, cpuQuotaCores };
}
