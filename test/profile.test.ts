import { describe, expect, it } from 'vitest';
import {
  type HardwareProfile, type Profile, type RawHardware, DEFAULT_MATERIAL, LinkEstimator, LoadSampler, ProfileMonitor,
  buildHardware, knownNumber, knownPercent, knownString, knownTemperature, loadBetween, makeProfile, materialChange,
  parseProcStat, readCgroupLimits, readHardware, scrubNumbers,
} from '../agent/profile';

/** Fails on any NaN / Infinity / undefined anywhere in a JSON-like value. */
function expectClean(value: unknown, where = '$'): void {
  if (typeof value === 'number') expect(Number.isFinite(value), `${where} = ${value}`).toBe(true);
  else if (value === undefined) throw new Error(`${where} is undefined`);
  else if (value !== null && typeof value === 'object') for (const [k, v] of Object.entries(value)) expectClean(v, `${where}.${k}`);
}

/** What systeminformation really returns on this project's VMs, plus the odd values seen elsewhere. */
const VM: RawHardware = {
  cpu: { manufacturer: 'AMD', brand: 'EPYC', speed: 0, speedMax: 0, cores: 2, physicalCores: 2 },
  mem: { total: 25276203008, available: 24721354752 },
  temperature: { main: null, max: null },
  battery: { hasBattery: false, percent: 0, acConnected: true, isCharging: false },
  cgroup: { memoryLimitBytes: null, memoryAvailableBytes: null, cpuQuotaCores: null },
  kernelMHz: 2445.426,
  parallelism: 2,
  load: null,
  platform: 'linux',
  arch: 'x64',
};

describe('sanitize: odd values are unknown (null), never NaN', () => {
  it('numbers: null, undefined, NaN, Infinity, "" and non-numeric strings are unknown', () => {
    for (const v of [null, undefined, NaN, Infinity, -Infinity, '', '  ', 'abc', {}, [], true]) expect(knownNumber(v)).toBeNull();
    expect(knownNumber('2.5')).toBe(2.5); // some systeminformation fields are strings
    expect(knownNumber(0)).toBe(0);
  });

  it('temperature: null, -1 (old systeminformation), 0 (VM thermal zones) and absurd values are unknown', () => {
    for (const v of [null, -1, 0, -40, NaN, '', 151, 1000]) expect(knownTemperature(v)).toBeNull();
    expect(knownTemperature(47.5)).toBe(47.5);
    expect(knownTemperature(150)).toBe(150);
  });

  it('percent: -1 and out-of-range are unknown, 0 is a real (empty) battery', () => {
    expect(knownPercent(-1)).toBeNull();
    expect(knownPercent(101)).toBeNull();
    expect(knownPercent(0)).toBe(0);
  });

  it('strings: empty and firmware placeholders are unknown', () => {
    for (const v of ['', '   ', 'Default string', 'To Be Filled By O.E.M.', 'unknown', null, 3]) expect(knownString(v)).toBeNull();
    expect(knownString('  Cortex-A72 ')).toBe('Cortex-A72');
  });

  it('scrubNumbers replaces non-finite numbers deep inside and drops undefined fields', () => {
    expect(scrubNumbers({ a: NaN, b: [1, Infinity], c: { d: -Infinity, e: 'x', f: undefined } })).toEqual({ a: null, b: [1, null], c: { d: null, e: 'x' } });
  });
});

describe('buildHardware (pure)', () => {
  it('this project\'s VM: speed from the kernel when systeminformation says 0, no sensor, no battery', () => {
    const hw = buildHardware(VM);
    expectClean(hw);
    expect(hw.cpu).toEqual({ model: 'AMD EPYC', manufacturer: 'AMD', brand: 'EPYC', physicalCores: 2, logicalCores: 2, effectiveCores: 2, quotaCores: null, speedGHz: 2.445 });
    expect(hw.memory.totalBytes).toBe(25276203008);
    expect(hw.memory.availableBytes).toBe(24721354752);
    expect(hw.temperatureC).toBeNull();
    expect(hw.battery).toEqual({ present: false, percent: null, onAc: true, charging: false });
    expect(hw.load).toEqual({ total: null, other: null });
  });

  it('everything missing or garbage: all unknown, still no NaN', () => {
    const garbage: RawHardware = {
      cpu: { manufacturer: '', brand: 'Default string', speed: NaN, speedMax: -1, cores: 0, physicalCores: null },
      mem: { total: -1, available: NaN },
      temperature: { main: -1, max: 0 },
      battery: { hasBattery: true, percent: -1, acConnected: undefined, isCharging: null },
      cgroup: null,
      kernelMHz: NaN,
      parallelism: undefined,
      load: { total: NaN, own: 0, other: NaN, seconds: 1 },
    };
    const hw = buildHardware(garbage);
    expectClean(hw);
    expect(hw.cpu).toEqual({ model: null, manufacturer: null, brand: null, physicalCores: null, logicalCores: null, effectiveCores: null, quotaCores: null, speedGHz: null });
    expect(hw.memory).toEqual({ totalBytes: null, availableBytes: null, hostTotalBytes: null, hostAvailableBytes: null, cgroupLimitBytes: null });
    expect(hw.temperatureC).toBeNull();
    expect(hw.battery).toEqual({ present: true, percent: null, onAc: null, charging: null });
    expect(hw.load).toEqual({ total: null, other: null });
    expect(buildHardware({})).toMatchObject({ battery: { present: null, onAc: null }, cpu: { model: null } });
  });

  it('in a container: the cgroup memory limit and CPU quota win over the host\'s totals', () => {
    const hw = buildHardware({ ...VM, cgroup: { memoryLimitBytes: 512 * 2 ** 20, memoryAvailableBytes: 100 * 2 ** 20, cpuQuotaCores: 1.5 } });
    expect(hw.memory.totalBytes).toBe(512 * 2 ** 20);
    expect(hw.memory.availableBytes).toBe(100 * 2 ** 20);
    expect(hw.memory.hostTotalBytes).toBe(25276203008);
    expect(hw.memory.cgroupLimitBytes).toBe(512 * 2 ** 20);
    expect(hw.cpu.effectiveCores).toBe(1.5);
    expect(hw.cpu.quotaCores).toBe(1.5);
    // A limit above the host's memory changes nothing.
    const loose = buildHardware({ ...VM, cgroup: { memoryLimitBytes: 64e9, memoryAvailableBytes: 63e9, cpuQuotaCores: 8 } });
    expect(loose.memory.totalBytes).toBe(25276203008);
    expect(loose.memory.cgroupLimitBytes).toBeNull();
    expect(loose.cpu.effectiveCores).toBe(2);
  });

  it('a battery-powered gateway: charge and power source; the main temperature, else the hottest core', () => {
    const hw = buildHardware({ ...VM, battery: { hasBattery: true, percent: 63, acConnected: false, isCharging: false }, temperature: { main: null, max: 61 } });
    expect(hw.battery).toEqual({ present: true, percent: 63, onAc: false, charging: false });
    expect(hw.temperatureC).toBe(61);
  });
});

describe('cgroup limits (fake files)', () => {
  const fs = (files: Record<string, string>) => (f: string) => files[f] ?? null;
  const v2Mount = '30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n';

  it('v2 in a container (cgroup namespace): memory.max and cpu.max at the mount root', () => {
    const limits = readCgroupLimits(fs({
      '/proc/self/cgroup': '0::/\n',
      '/proc/self/mountinfo': v2Mount,
      '/sys/fs/cgroup/memory.max': '536870912\n',
      '/sys/fs/cgroup/memory.current': '209715200\n',
      '/sys/fs/cgroup/memory.stat': 'anon 100\nfile 5\ninactive_file 104857600\nactive_file 1\n',
      '/sys/fs/cgroup/cpu.max': '150000 100000\n',
    }));
    expect(limits).toEqual({ memoryLimitBytes: 536870912, memoryAvailableBytes: 536870912 - (209715200 - 104857600), cpuQuotaCores: 1.5 });
  });

  it('v2 "max" means no limit; a limit on a parent slice applies to the leaf', () => {
    const limits = readCgroupLimits(fs({
      '/proc/self/cgroup': '0::/system.slice/fedgate.service\n',
      '/proc/self/mountinfo': v2Mount,
      '/sys/fs/cgroup/system.slice/fedgate.service/memory.max': 'max\n',
      '/sys/fs/cgroup/system.slice/fedgate.service/cpu.max': 'max 100000\n',
      '/sys/fs/cgroup/system.slice/memory.max': '1073741824\n',
      '/sys/fs/cgroup/system.slice/memory.current': '73741824\n',
    }));
    expect(limits).toEqual({ memoryLimitBytes: 1073741824, memoryAvailableBytes: 1e9, cpuQuotaCores: null });
  });

  it('v1 without a cgroup namespace (docker): the /proc/self/cgroup path is the mount root; huge = unlimited', () => {
    const mountinfo = [
      '35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory',
      '32 31 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct',
    ].join('\n');
    const limits = readCgroupLimits(fs({
      '/proc/self/cgroup': '4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n',
      '/proc/self/mountinfo': mountinfo,
      '/sys/fs/cgroup/memory/memory.limit_in_bytes': '268435456\n',
      '/sys/fs/cgroup/memory/memory.usage_in_bytes': '200000000\n',
      '/sys/fs/cgroup/memory/memory.stat': 'cache 1\ntotal_inactive_file 50000000\n',
      '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us': '50000\n',
      '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us': '100000\n',
    }));
    expect(limits).toEqual({ memoryLimitBytes: 268435456, memoryAvailableBytes: 268435456 - 150000000, cpuQuotaCores: 0.5 });
    const unlimited = readCgroupLimits(fs({
      '/proc/self/cgroup': '4:memory:/x\n',
      '/proc/self/mountinfo': '35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory',
      '/sys/fs/cgroup/memory/x/memory.limit_in_bytes': '9223372036854771712\n',
      '/sys/fs/cgroup/memory/memory.limit_in_bytes': '9223372036854771712\n',
      '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1\n',
    }));
    expect(unlimited).toEqual({ memoryLimitBytes: null, memoryAvailableBytes: null, cpuQuotaCores: null });
  });

  it('nothing readable (not Linux): all null', () => {
    expect(readCgroupLimits(() => null)).toEqual({ memoryLimitBytes: null, memoryAvailableBytes: null, cpuQuotaCores: null });
  });
});

describe('CPU load', () => {
  it('parses /proc/stat (USER_HZ ticks): iowait is idle, steal is busy', () => {
    expect(parseProcStat('cpu  100 0 50 800 20 5 5 20 0 0\ncpu0 1 2 3 4\n')).toEqual({ busyMs: 1800, totalMs: 10000 });
    expect(parseProcStat('intr 1 2 3')).toBeNull();
  });

  it('loadBetween splits total into own and other; an empty interval is unknown', () => {
    const a = { busyMs: 1000, totalMs: 10000, ownMicros: 0 };
    const s = loadBetween(a, { busyMs: 2600, totalMs: 12000, ownMicros: 400_000 }, 2)!;
    expect(s.total).toBeCloseTo(0.8);
    expect(s.own).toBeCloseTo(0.2);
    expect(s.other).toBeCloseTo(0.6);
    expect(s.seconds).toBeCloseTo(1);
    expect(loadBetween(a, a)).toBeNull();
    // Own time measured more finely than the kernel's ticks can exceed the busy delta: other stays >= 0.
    expect(loadBetween(a, { busyMs: 1100, totalMs: 12000, ownMicros: 300_000 })!.other).toBe(0);
  });

  it('LoadSampler discards the first (since-boot) sample and measures this process\'s own CPU', async () => {
    const sampler = new LoadSampler();
    expect(sampler.sample()).toBeNull();
    const end = performance.now() + 600;
    while (performance.now() < end); // one core busy in this very process
    const s = sampler.sample()!;
    expect(s.seconds).toBeGreaterThan(0.4);
    expect(s.own).toBeGreaterThan(0.2); // ~1/cores of the machine
    expect(s.total).toBeGreaterThanOrEqual(s.own - 0.05);
  });
});

describe('LinkEstimator', () => {
  it('is unknown until measured (or the prior), ignores nonsense and tiny transfers', () => {
    const link = new LinkEstimator();
    expect(link.estimate).toEqual({ upBytesPerSecond: null, downBytesPerSecond: null });
    expect(link.observe('up', 1e6, 0)).toBe(false);
    expect(link.observe('up', 1e6, -1)).toBe(false);
    expect(link.observe('up', NaN, 1)).toBe(false);
    expect(link.observe('up', 1e6, Infinity)).toBe(false);
    expect(link.observe('up', 1000, 0.001)).toBe(false); // 1 kB: latency, not bandwidth
    expect(link.estimate.upBytesPerSecond).toBeNull();
    expect(link.observe('up', 2e6, 2)).toBe(true);
    expect(link.estimate).toEqual({ upBytesPerSecond: 1e6, downBytesPerSecond: null });
    expect(link.measured('up')).toBe(true);
  });

  it('smooths with alpha 0.3, small transfers weighted down', () => {
    const link = new LinkEstimator();
    link.observe('down', 4 * 2 ** 20, 4); // 1 MiB/s
    link.observe('down', 4 * 2 ** 20, 1); // 4 MiB/s, full weight: 1 + 0.3 × 3
    expect(link.estimate.downBytesPerSecond! / 2 ** 20).toBeCloseTo(1.9);
    const before = link.estimate.downBytesPerSecond!;
    link.observe('down', 2 ** 18, 2 ** 18 / (10 * 2 ** 20)); // 256 KiB at 10 MiB/s: weight 1/4
    expect(link.estimate.downBytesPerSecond!).toBeCloseTo(before + 0.3 * 0.25 * (10 * 2 ** 20 - before));
  });

  it('a prior stands in until the first measurement, which replaces it', () => {
    const link = new LinkEstimator({ prior: { upBytesPerSecond: 125_000, downBytesPerSecond: NaN } });
    expect(link.estimate).toEqual({ upBytesPerSecond: 125_000, downBytesPerSecond: null });
    expect(link.measured('up')).toBe(false);
    link.observe('up', 2e6, 1);
    expect(link.estimate.upBytesPerSecond).toBe(2e6);
    expect(() => new LinkEstimator({ alpha: 0 })).toThrow(RangeError);
  });
});

const hw = (over: Partial<HardwareProfile> = {}): HardwareProfile => ({ ...buildHardware({ ...VM, load: { total: 0.3, own: 0.1, other: 0.2, seconds: 30 } }), ...over });
const profile = (over: Partial<Profile> = {}, hardware = hw()): Profile => ({
  ...makeProfile(hardware, { ts: 1000, trainSamplesPerSecond: 50_000, trainModel: 'mlp-784-128-10', link: { upBytesPerSecond: 1e6, downBytesPerSecond: 5e6 } }),
  ...over,
});

describe('materialChange (pure)', () => {
  const base = profile();

  it('first profile is material; the same one again is not', () => {
    expect(materialChange(null, base)).toEqual(['initial']);
    expect(materialChange(base, { ...base, ts: 99_999 })).toEqual([]);
  });

  it('load moves by more than 0.2', () => {
    expect(materialChange(base, { ...base, load: { total: 0.45, other: 0.35 } })).toEqual([]);
    expect(materialChange(base, { ...base, load: { total: 0.55, other: 0.2 } })).toEqual(['load.total 0.30 -> 0.55']);
    expect(materialChange(base, { ...base, load: { total: null, other: null } })).toEqual([]); // turned unknown: not material
  });

  it('available memory by more than 20%, total memory or effective cores at all', () => {
    const mem = (availableBytes: number | null) => profile({}, hw({ memory: { ...base.hardware.memory, availableBytes } }));
    const avail = base.hardware.memory.availableBytes!;
    expect(materialChange(base, mem(avail * 0.85))).toEqual([]);
    expect(materialChange(base, mem(avail * 0.75))).toHaveLength(1);
    expect(materialChange(base, mem(null))).toEqual([]);
    const limited = profile({}, hw({ memory: { ...base.hardware.memory, totalBytes: 2 ** 30 }, cpu: { ...base.hardware.cpu, effectiveCores: 1 } }));
    expect(materialChange(base, limited)).toEqual(['memory.total changed', 'cpu.effectiveCores changed']);
  });

  it('throughput by more than 25%, or first measured, or another model', () => {
    expect(materialChange(base, { ...base, trainSamplesPerSecond: 40_000 })).toEqual([]);
    expect(materialChange(base, { ...base, trainSamplesPerSecond: 35_000 })).toEqual(['trainSamplesPerSecond 5.00e+4 -> 3.50e+4']);
    expect(materialChange({ ...base, trainSamplesPerSecond: null, trainModel: null }, base)).toEqual(['trainModel -> mlp-784-128-10']);
    expect(materialChange({ ...base, trainSamplesPerSecond: null }, base)).toEqual(['trainSamplesPerSecond measured']);
    expect(materialChange(base, { ...base, trainModel: 'cnn', trainSamplesPerSecond: 50_000 })).toEqual(['trainModel -> cnn']);
  });

  it('link by more than 50% or first measured', () => {
    expect(materialChange(base, { ...base, link: { upBytesPerSecond: 1.4e6, downBytesPerSecond: 5e6 } })).toEqual([]);
    expect(materialChange(base, { ...base, link: { upBytesPerSecond: 1.6e6, downBytesPerSecond: 5e6 } })).toHaveLength(1);
    expect(materialChange({ ...base, link: { upBytesPerSecond: null, downBytesPerSecond: 5e6 } }, base)).toEqual(['link.up measured']);
  });

  it('battery: crossing 10/20/50% either way, power source, temperature by 10 °C', () => {
    const bat = (percent: number | null, onAc: boolean | null = false) => ({ ...base, battery: { present: true, percent, onAc, charging: false } });
    expect(materialChange(bat(55), bat(51))).toEqual([]);
    expect(materialChange(bat(51), bat(49))).toEqual(['battery crossed 50%']);
    expect(materialChange(bat(19), bat(21))).toEqual(['battery crossed 20%']);
    expect(materialChange(bat(55), bat(15))).toEqual(['battery crossed 20%', 'battery crossed 50%']);
    expect(materialChange(bat(55), bat(55, true))).toEqual(['on external power']);
    expect(materialChange(bat(55), bat(null, null))).toEqual([]);
    expect(materialChange({ ...base, temperatureC: 50 }, { ...base, temperatureC: 59 })).toEqual([]);
    expect(materialChange({ ...base, temperatureC: 50 }, { ...base, temperatureC: 60 })).toEqual(['temperature 50 -> 60 °C']);
    expect(DEFAULT_MATERIAL.batteryPercents).toEqual([10, 20, 50]);
  });
});

describe('ProfileMonitor', () => {
  it('emits the initial profile, then only material changes (measurements included) and periodic refreshes', async () => {
    const busy = hw({ load: { total: 0.9, other: 0.8 } });
    const readings = [hw(), hw(), busy, busy];
    let now = 0;
    const monitor = new ProfileMonitor({ node: 'gw-1', read: async () => readings.shift() ?? hw(), now: () => now, republishSeconds: 60 });
    const seen: string[][] = [];
    monitor.on('change', (p, why) => {
      expectClean(p);
      expect(p.node).toBe('gw-1');
      seen.push(why);
    });
    const first = await monitor.start();
    monitor.stop();
    expect(first.trainSamplesPerSecond).toBeNull();
    expect(seen).toEqual([['initial']]);
    now = 1000;
    await monitor.refresh(); // same hardware
    expect(seen).toHaveLength(1);
    monitor.setTrainThroughput(40_000, 'mlp-784-128-10');
    expect(seen[1]).toEqual(['trainModel -> mlp-784-128-10']);
    monitor.observeTraining('mlp-784-128-10', 45_000, 1); // +12.5%: not material
    expect(monitor.profile!.trainSamplesPerSecond).toBeCloseTo(41_500);
    monitor.observeTransfer('up', 10, 1); // too small: ignored
    monitor.observeTransfer('up', 2e6, 1);
    expect(seen[2]).toEqual(['link.up measured']);
    await monitor.refresh(); // load jumps
    expect(seen[3]).toEqual(['load.total 0.30 -> 0.90', 'load.other 0.20 -> 0.80']);
    now = 62_000;
    await monitor.refresh();
    expect(seen[4]).toEqual(['periodic']);
    expect(seen).toHaveLength(5);
  });
});

describe('readHardware on this machine', () => {
  it('returns a complete profile with no NaN; load is measured, not since boot', async () => {
    const t0 = performance.now();
    const h = await readHardware({ loadWindowMs: 300 });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(250);
    expectClean(h);
    expect(h.cpu.logicalCores).toBeGreaterThanOrEqual(1);
    expect(h.cpu.effectiveCores).toBeGreaterThan(0);
    expect(h.memory.totalBytes).toBeGreaterThan(0);
    expect(h.memory.availableBytes).toBeGreaterThanOrEqual(0);
    expect(h.load.total).toBeGreaterThanOrEqual(0);
    expect(h.load.total).toBeLessThanOrEqual(1);
    expect(h.load.other).toBeLessThanOrEqual(h.load.total!);
    expect(JSON.parse(JSON.stringify(h))).toEqual(h);
  });
});
