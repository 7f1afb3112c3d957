import * as os from 'node:os';
import { type ReadText, readTextOrNull } from './cgroup';

/**
 * CPU load measured from the kernel's cumulative counters, between two snapshots this module takes
 * itself. (systeminformation's currentLoad keeps one process-wide baseline, so two callers shorten
 * each other's interval, and its first value is the average since boot.) Each snapshot also records
 * this process's own CPU time (process.cpuUsage: all its threads, the trainer's worker included),
 * so "other" load — the host's own work — is total minus ours over exactly the same interval.
 */
export interface CpuSnapshot {
  /** Busy CPU time summed over all CPUs since boot, ms. */
  busyMs: number;
  /** All CPU time (busy + idle) summed over all CPUs since boot, ms: wall time × CPUs. */
  totalMs: number;
  /** This process's CPU time (user + system, every thread), µs. */
  ownMicros: number;
}

export interface LoadSample {
  /** Share of all CPUs busy over the interval, 0..1. */
  total: number;
  /** Share taken by this process (training included), 0..1. */
  own: number;
  /** Share taken by everything else on the host: max(0, total − own). */
  other: number;
  /** Length of the interval, s (CPU time / CPUs). */
  seconds: number;
}

/** /proc/stat counts in USER_HZ, which Linux fixes at 100 for user space on every architecture. */
const TICK_MS = 10;

/**
 * Busy and total time from /proc/stat's first line: user nice system idle iowait irq softirq steal
 * (guest time is already inside user). iowait counts as idle; steal as busy (the CPU was not ours).
 */
export function parseProcStat(text: string): { busyMs: number; totalMs: number } | null {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) return null;
  const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
  if (v.length < 4 || v.some((x) => !Number.isFinite(x))) return null;
  const [user, nice, system, idle, iowait = 0, irq = 0, softirq = 0, steal = 0] = v;
  const busy = user + nice + system + irq + softirq + steal;
  return { busyMs: busy * TICK_MS, totalMs: (busy + idle + iowait) * TICK_MS };
}

/** Takes a snapshot: /proc/stat on Linux, os.cpus() elsewhere. */
export function cpuSnapshot(read: ReadText = readTextOrNull): CpuSnapshot {
  const own = process.cpuUsage();
  const ownMicros = own.user + own.system;
  const stat = process.platform === 'linux' ? read('/proc/stat') : null;
  const parsed = stat ? parseProcStat(stat) : null;
  if (parsed) return { ...parsed, ownMicros };
  let busyMs = 0;
  let totalMs = 0;
  for (const c of os.cpus()) {
    const busy = c.times.user + c.times.nice + c.times.sys + c.times.irq;
    busyMs += busy;
    totalMs += busy + c.times.idle;
  }
  return { busyMs, totalMs, ownMicros };
}

/** Load between two snapshots; null when the interval is empty (or the counters went backwards). */
export function loadBetween(a: CpuSnapshot, b: CpuSnapshot, cpus = os.cpus().length): LoadSample | null {
  const dTotal = b.totalMs - a.totalMs;
  const dBusy = b.busyMs - a.busyMs;
  const dOwn = (b.ownMicros - a.ownMicros) / 1000;
  if (!(dTotal > 0) || !(dBusy >= 0) || !(dOwn >= 0)) return null;
  const clamp = (x: number) => Math.min(1, Math.max(0, x));
  const total = clamp(dBusy / dTotal);
  const own = clamp(dOwn / dTotal);
  return { total, own, other: clamp(total - own), seconds: dTotal / 1000 / Math.max(1, cpus) };
}

/**
 * Load over the interval between successive calls. The first call only records the baseline and
 * returns null: the only thing it could report is the average since boot.
 */
export class LoadSampler {
  private last: CpuSnapshot | undefined;

  constructor(private readonly snapshot: () => CpuSnapshot = () => cpuSnapshot()) {}

  sample(): LoadSample | null {
    const now = this.snapshot();
    const prev = this.last;
    this.last = now;
    return prev ? loadBetween(prev, now) : null;
  }

  /** A fresh sample over `ms` from now (takes a new baseline first). */
  async measure(ms = 500): Promise<LoadSample | null> {
    this.sample();
    await new Promise((r) => setTimeout(r, ms));
    return this.sample();
  }
}
