import type { LinkEstimate } from './calibrate';
import type { HardwareProfile } from './hardware';
import { scrubNumbers } from './sanitize';

/** Schema version of the profile message (bumped on incompatible changes). */
export const PROFILE_VERSION = 1;

/**
 * What a gateway publishes, retained, on `<base>/node/<id>/profile`: what it is, how busy it is,
 * how fast it trains the current model and how fast its link is. `null` = unknown, never NaN.
 */
export interface Profile {
  version: typeof PROFILE_VERSION;
  node?: string;
  /** When this profile was read, ms since the epoch (the gateway's clock). */
  ts: number;
  hardware: Pick<HardwareProfile, 'cpu' | 'memory' | 'platform' | 'arch'>;
  load: HardwareProfile['load'];
  temperatureC: number | null;
  battery: HardwareProfile['battery'];
  /** Measured training throughput for `trainModel` (samples per second of compute), null until measured. */
  trainSamplesPerSecond: number | null;
  trainModel: string | null;
  link: LinkEstimate;
}

export interface ProfileExtras {
  node?: string;
  ts: number;
  trainSamplesPerSecond: number | null;
  trainModel: string | null;
  link: LinkEstimate;
}

/** Pure: assembles a profile; any non-finite number that slipped through becomes null. */
export function makeProfile(hw: HardwareProfile, extras: ProfileExtras): Profile {
  return scrubNumbers({
    version: PROFILE_VERSION,
    ...(extras.node !== undefined ? { node: extras.node } : {}),
    ts: extras.ts,
    hardware: { cpu: hw.cpu, memory: hw.memory, platform: hw.platform, arch: hw.arch },
    load: hw.load,
    temperatureC: hw.temperatureC,
    battery: hw.battery,
    trainSamplesPerSecond: extras.trainSamplesPerSecond,
    trainModel: extras.trainModel,
    link: extras.link,
  });
}

/**
 * What counts as a material change, worth re-publishing before the periodic refresh:
 * - load (total or other) moved by more than `load` (absolute fraction);
 * - available memory changed by more than `memory` (relative), or the effective total or cores changed;
 * - training throughput changed by more than `throughput` (relative), became known, or the model changed;
 * - link throughput (either way) changed by more than `link` (relative) or became known;
 * - temperature moved by at least `temperatureC` degrees;
 * - battery: presence or power source changed, or the charge crossed one of `batteryPercents`.
 * A known value turning unknown (a flaky sensor) is not material; unknown turning known is, for
 * measurements (throughput, link) only.
 */
export interface MaterialThresholds {
  load: number;
  memory: number;
  throughput: number;
  link: number;
  temperatureC: number;
  batteryPercents: number[];
}

export const DEFAULT_MATERIAL: MaterialThresholds = { load: 0.2, memory: 0.2, throughput: 0.25, link: 0.5, temperatureC: 10, batteryPercents: [10, 20, 50] };

const relChange = (a: number, b: number) => Math.abs(b - a) / Math.max(Math.abs(a), Number.EPSILON);

/** Pure: why `next` differs materially from `prev` (empty: it does not). `prev` null: ['initial']. */
export function materialChange(prev: Profile | null, next: Profile, t: MaterialThresholds = DEFAULT_MATERIAL): string[] {
  if (!prev) return ['initial'];
  const why: string[] = [];
  const both = (a: number | null, b: number | null): [number, number] | null => (a !== null && b !== null ? [a, b] : null);

  for (const k of ['total', 'other'] as const) {
    const v = both(prev.load[k], next.load[k]);
    if (v && Math.abs(v[1] - v[0]) > t.load) why.push(`load.${k} ${v[0].toFixed(2)} -> ${v[1].toFixed(2)}`);
  }
  const mem = both(prev.hardware.memory.availableBytes, next.hardware.memory.availableBytes);
  if (mem && relChange(mem[0], mem[1]) > t.memory) why.push(`memory.available ${mb(mem[0])} -> ${mb(mem[1])} MB`);
  if (prev.hardware.memory.totalBytes !== next.hardware.memory.totalBytes) why.push('memory.total changed');
  if (prev.hardware.cpu.effectiveCores !== next.hardware.cpu.effectiveCores) why.push('cpu.effectiveCores changed');

  if (prev.trainModel !== next.trainModel && next.trainModel !== null) why.push(`trainModel -> ${next.trainModel}`);
  else measurement('trainSamplesPerSecond', prev.trainSamplesPerSecond, next.trainSamplesPerSecond, t.throughput, why);
  measurement('link.up', prev.link.upBytesPerSecond, next.link.upBytesPerSecond, t.link, why);
  measurement('link.down', prev.link.downBytesPerSecond, next.link.downBytesPerSecond, t.link, why);

  const temp = both(prev.temperatureC, next.temperatureC);
  if (temp && Math.abs(temp[1] - temp[0]) >= t.temperatureC) why.push(`temperature ${temp[0]} -> ${temp[1]} °C`);

  if (prev.battery.present !== next.battery.present && next.battery.present !== null) why.push('battery.present changed');
  if (prev.battery.onAc !== next.battery.onAc && next.battery.onAc !== null) why.push(next.battery.onAc ? 'on external power' : 'on battery');
  const pct = both(prev.battery.percent, next.battery.percent);
  if (pct) for (const level of t.batteryPercents) if (pct[0] < level !== pct[1] < level) why.push(`battery crossed ${level}%`);
  return why;
}

function measurement(name: string, a: number | null, b: number | null, threshold: number, why: string[]): void {
  if (b === null) return;
  if (a === null) why.push(`${name} measured`);
  else if (relChange(a, b) > threshold) why.push(`${name} ${a.toPrecision(3)} -> ${b.toPrecision(3)}`);
}

const mb = (bytes: number) => Math.round(bytes / 1e6);
