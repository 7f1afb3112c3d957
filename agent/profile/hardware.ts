import * as os from 'node:os';
import si from 'systeminformation';
import { logger } from '../log';
import { type CgroupLimits, type ReadText, readCgroupLimits, readTextOrNull } from './cgroup';
import { type LoadSample, LoadSampler } from './cpu-load';
import { knownBoolean, knownCount, knownFraction, knownPercent, knownPositive, knownString, knownTemperature } from './sanitize';

const log = logger('profile');

/** What this gateway is and how loaded it is right now. Every `null` means "unknown" (never NaN). */
export interface HardwareProfile {
  cpu: {
    /** e.g. "AMD EPYC", "ARM Cortex-A72": manufacturer and brand together. */
    model: string | null;
    manufacturer: string | null;
    brand: string | null;
    physicalCores: number | null;
    logicalCores: number | null;
    /** CPUs this process may really use: logical cores (or the affinity mask) capped by the cgroup CPU quota; may be fractional. */
    effectiveCores: number | null;
    /** The cgroup CPU quota in cores, null when none is set. */
    quotaCores: number | null;
    speedGHz: number | null;
  };
  memory: {
    /** Effective total: the cgroup limit where one is set below the host's memory, else the host's. */
    totalBytes: number | null;
    /** Effective available: the smaller of the host's available memory and the headroom under the cgroup limit. */
    availableBytes: number | null;
    hostTotalBytes: number | null;
    hostAvailableBytes: number | null;
    cgroupLimitBytes: number | null;
  };
  /** CPU load over a recent interval (never the since-boot average), fractions 0..1 of the host's CPUs. */
  load: { total: number | null; other: number | null };
  temperatureC: number | null;
  battery: {
    /** false: no battery (mains or PoE powered). null: could not tell. */
    present: boolean | null;
    percent: number | null;
    /** On external power. A gateway without a battery is on external power by definition. */
    onAc: boolean | null;
    charging: boolean | null;
  };
  platform: string;
  arch: string;
}

/** Raw readings as systeminformation, the kernel and the cgroup files returned them: any field may be odd. */
export interface RawHardware {
  cpu?: { manufacturer?: unknown; brand?: unknown; speed?: unknown; speedMax?: unknown; cores?: unknown; physicalCores?: unknown } | null;
  mem?: { total?: unknown; available?: unknown } | null;
  temperature?: { main?: unknown; max?: unknown } | null;
  battery?: { hasBattery?: unknown; percent?: unknown; acConnected?: unknown; isCharging?: unknown } | null;
  cgroup?: CgroupLimits | null;
  /** CPU clock from the kernel (cpufreq max or /proc/cpuinfo), MHz, for when systeminformation reports 0. */
  kernelMHz?: unknown;
  /** os.availableParallelism(): logical CPUs in this process's affinity mask. */
  parallelism?: unknown;
  load?: LoadSample | null;
  platform?: string;
  arch?: string;
}

const minKnown = (...xs: Array<number | null>): number | null => {
  const known = xs.filter((x): x is number => x !== null);
  return known.length ? Math.min(...known) : null;
};

/** Pure: turns raw readings into a profile, every odd value becoming null (see sanitize.ts). */
export function buildHardware(raw: RawHardware): HardwareProfile {
  const cpu = raw.cpu ?? {};
  const manufacturer = knownString(cpu.manufacturer);
  const brand = knownString(cpu.brand);
  const logicalCores = knownCount(cpu.cores);
  const quotaCores = knownPositive(raw.cgroup?.cpuQuotaCores);
  const usable = knownCount(raw.parallelism) ?? logicalCores;
  const kernelGHz = knownPositive(raw.kernelMHz, 20_000);
  const speedGHz = knownPositive(cpu.speed, 20) ?? knownPositive(cpu.speedMax, 20) ?? (kernelGHz === null ? null : Math.round(kernelGHz) / 1000);

  const hostTotalBytes = knownPositive(raw.mem?.total);
  const hostAvailableBytes = knownNumberOrNull(raw.mem?.available);
  const limit = knownPositive(raw.cgroup?.memoryLimitBytes);
  const cgroupLimitBytes = limit !== null && (hostTotalBytes === null || limit < hostTotalBytes) ? limit : null;
  const headroom = cgroupLimitBytes === null ? null : knownNumberOrNull(raw.cgroup?.memoryAvailableBytes);

  const bat = raw.battery;
  const hasBattery = knownBoolean(bat?.hasBattery);
  const battery: HardwareProfile['battery'] =
    hasBattery === false
      ? { present: false, percent: null, onAc: true, charging: false }
      : hasBattery === true
        ? { present: true, percent: knownPercent(bat?.percent), onAc: knownBoolean(bat?.acConnected), charging: knownBoolean(bat?.isCharging) }
        : { present: null, percent: null, onAc: null, charging: null };

  return {
    cpu: {
      model: [manufacturer, brand].filter(Boolean).join(' ') || null,
      manufacturer,
      brand,
      physicalCores: knownCount(cpu.physicalCores),
      logicalCores,
      effectiveCores: minKnown(usable, quotaCores),
      quotaCores,
      speedGHz,
    },
    memory: {
      totalBytes: cgroupLimitBytes ?? hostTotalBytes,
      availableBytes: minKnown(hostAvailableBytes, headroom),
      hostTotalBytes,
      hostAvailableBytes,
      cgroupLimitBytes,
    },
    load: { total: round3(knownFraction(raw.load?.total)), other: round3(knownFraction(raw.load?.other)) },
    temperatureC: knownTemperature(raw.temperature?.main) ?? knownTemperature(raw.temperature?.max),
    battery,
    platform: raw.platform ?? process.platform,
    arch: raw.arch ?? process.arch,
  };
}

/** Load to 0.1 %: the kernel counts in 10 ms ticks, more digits would be noise. */
const round3 = (x: number | null): number | null => (x === null ? null : Math.round(x * 1000) / 1000);

/** Available memory may legitimately be 0. */
function knownNumberOrNull(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : null;
}

/** The kernel's CPU clock in MHz: cpufreq's maximum (ARM boards), else /proc/cpuinfo's "cpu MHz" (x86). */
export function kernelCpuMHz(read: ReadText = readTextOrNull): number | null {
  const khz = Number(read('/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq')?.trim());
  if (Number.isFinite(khz) && khz > 0) return khz / 1000;
  const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(read('/proc/cpuinfo') ?? '');
  return m ? Number(m[1]) : null;
}

/** A systeminformation call that never throws nor hangs: null on failure or after `ms`. */
async function safely<T>(what: string, call: () => Promise<T>, ms = 5000): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([call(), new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), ms)))]);
  } catch (err) {
    log.debug({ err: (err as Error).message }, `systeminformation ${what} failed`);
    return null;
  } finally {
    clearTimeout(timer);
  }
}

export interface ReadHardwareOptions {
  /** A sampler already running (e.g. the monitor's): its load covers the time since its last sample. */
  sampler?: LoadSampler;
  /** Without a running sampler, measure load over this window (default 500 ms). */
  loadWindowMs?: number;
}

/** Reads the hardware, the cgroup limits and the current load (~loadWindowMs on a first read, tens of ms after). */
export async function readHardware(opts: ReadHardwareOptions = {}): Promise<HardwareProfile> {
  const sampler = opts.sampler ?? new LoadSampler();
  const load = sampler.sample();
  const [cpu, mem, temperature, battery, measured] = await Promise.all([
    safely('cpu', () => si.cpu()),
    safely('mem', () => si.mem()),
    safely('cpuTemperature', () => si.cpuTemperature()),
    safely('battery', () => si.battery()),
    load ? Promise.resolve(load) : sampler.measure(opts.loadWindowMs ?? 500),
  ]);
  return buildHardware({
    cpu,
    mem,
    temperature,
    battery,
    cgroup: readCgroupLimits(),
    kernelMHz: process.platform === 'linux' ? kernelCpuMHz() : null,
    parallelism: os.availableParallelism(),
    load: measured,
  });
}
