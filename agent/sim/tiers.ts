import { readFileSync } from 'node:fs';
import { createRng } from '../data';

/**
 * Device models for simulated fleets. Compute is in effective GFLOP/s for small-batch training on
 * the CPU (what a gateway sustains, not its peak); links in bytes per second; availability as a
 * two-state on/off process with mean durations, or explicit windows from a trace.
 */
export interface DeviceTier {
  name: string;
  gflops: number;
  upBytesPerSecond: number;
  downBytesPerSecond: number;
  latencySeconds: number;
  /** Mean seconds online and offline (exponential); omitted = always online. */
  meanOnlineSeconds?: number;
  meanOfflineSeconds?: number;
}

const mbit = (x: number) => (x * 1e6) / 8;

/** Built-in tiers, from slowest to fastest. */
export const TIERS: Record<string, DeviceTier> = {
  pi3: { name: 'pi3', gflops: 0.4, upBytesPerSecond: mbit(1), downBytesPerSecond: mbit(4), latencySeconds: 0.3, meanOnlineSeconds: 3600, meanOfflineSeconds: 600 },
  pi4: { name: 'pi4', gflops: 1.5, upBytesPerSecond: mbit(5), downBytesPerSecond: mbit(20), latencySeconds: 0.08, meanOnlineSeconds: 4 * 3600, meanOfflineSeconds: 600 },
  jetson: { name: 'jetson', gflops: 4, upBytesPerSecond: mbit(10), downBytesPerSecond: mbit(40), latencySeconds: 0.04, meanOnlineSeconds: 8 * 3600, meanOfflineSeconds: 300 },
  x86: { name: 'x86', gflops: 10, upBytesPerSecond: mbit(50), downBytesPerSecond: mbit(100), latencySeconds: 0.01 },
};

/** One simulated device: a tier, an id, and its availability over simulated time. */
export interface Device {
  id: string;
  tier: DeviceTier;
  /** Sorted, disjoint [start, end) seconds when the device is online; undefined = always. */
  windows?: [number, number][];
}

/** "pi3:25,pi4:25,jetson:25,x86:25" or "pi3,x86" (equal shares) → tier per device, interleaved deterministically. */
export function parseTierMix(spec: string, devices: number, seed: number): DeviceTier[] {
  const parts = spec.split(',').map((p) => p.trim()).filter(Boolean);
  if (parts.length === 0) throw new Error('--tiers is empty');
  const shares = parts.map((p) => {
    const [name, w] = p.split(':');
    const tier = TIERS[name];
    if (!tier) throw new Error(`unknown tier "${name}": built-in tiers are ${Object.keys(TIERS).join(', ')} (or use --trace <file>)`);
    const weight = w === undefined ? 1 : Number(w);
    if (!(weight > 0)) throw new Error(`tier "${name}" has share "${w}": must be a number above 0`);
    return { tier, weight };
  });
  // A tier named twice would get two slices of the interleaving, not the share the user meant to say once.
  for (const { tier } of shares) {
    const same = shares.filter((s) => s.tier === tier);
    if (same.length > 1) {
      const whole = same.reduce((s, x) => s + x.weight, 0);
      throw new Error(`--tiers names tier "${tier.name}" ${same.length === 2 ? 'twice' : `${same.length} times`}: name each tier once, with its whole share (${tier.name}:${whole})`);
    }
  }
  const total = shares.reduce((s, x) => s + x.weight, 0);
  const out: DeviceTier[] = [];
  shares.forEach((s, i) => {
    const n = i === shares.length - 1 ? devices - out.length : Math.round((devices * s.weight) / total);
    for (let j = 0; j < n && out.length < devices; j++) out.push(s.tier);
  });
  const rng = createRng(seed ^ 0x7153);
  for (let i = out.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** Availability windows over [0, horizon) from the tier's on/off means; seeded per device. */
export function availabilityWindows(tier: DeviceTier, horizon: number, seed: number): [number, number][] | undefined {
  if (!tier.meanOnlineSeconds || !tier.meanOfflineSeconds) return undefined;
  const rng = createRng(seed);
  const exp = (mean: number) => -mean * Math.log(1 - rng.next());
  const out: [number, number][] = [];
  // Start online with the stationary probability.
  let t = 0;
  let online = rng.next() < tier.meanOnlineSeconds / (tier.meanOnlineSeconds + tier.meanOfflineSeconds);
  while (t < horizon) {
    const d = exp(online ? tier.meanOnlineSeconds : tier.meanOfflineSeconds);
    if (online) out.push([t, Math.min(horizon, t + d)]);
    t += d;
    online = !online;
  }
  return out;
}

/** True if the device is online during the whole of [from, to]. */
export function onlineThrough(d: Device, from: number, to: number): boolean {
  if (!d.windows) return true;
  return d.windows.some(([s, e]) => s <= from && to <= e);
}

/** True if `t` is inside one of the device's [start, end) windows. */
export function isOnline(d: Device, t: number): boolean {
  if (!d.windows) return true;
  return d.windows.some(([s, e]) => s <= t && t < e);
}

/** The first time ≥ `t` at which the device is online, or undefined if it never is again. */
export function nextOnline(d: Device, t: number): number | undefined {
  if (!d.windows) return t;
  const w = d.windows.find(([, e]) => t < e);
  return w && Math.max(t, w[0]);
}

/**
 * A trace file (JSON) describing a real fleet:
 *   { "devices": [ { "id": "gw-a", "gflops": 1.2, "upMbps": 2, "downMbps": 10, "latencyMs": 120,
 *                    "availability": [[0, 3600], [4000, 86400]] }, ... ] }
 * `tier` may name a built-in tier whose values the other fields override. Availability windows are
 * [start, end) in seconds from the start of the run, sorted by start, disjoint, none empty or before 0
 * (back-to-back windows are merged into one); omitted = always online.
 */
export function loadTrace(file: string): Device[] {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read trace ${file}: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`trace ${file}: must be an object { "devices": [...] }`);
  const extra = Object.keys(raw).filter((k) => k !== 'devices');
  if (extra.length) throw new Error(`trace ${file}: unknown ${keyList(extra)}; a trace has only "devices"`);
  const devices = (raw as { devices?: unknown }).devices;
  if (!Array.isArray(devices) || devices.length === 0) throw new Error(`trace ${file}: "devices" must be a non-empty array`);
  const seen = new Map<string, number>();
  return devices.map((d: Record<string, unknown>, i: number) => {
    const where = `trace ${file}: devices[${i}]`;
    if (typeof d !== 'object' || d === null || Array.isArray(d)) throw new Error(`${where}: must be an object with an id and a tier or gflops, upMbps, downMbps, latencyMs`);
    const unknown = Object.keys(d).filter((k) => !DEVICE_KEYS.includes(k));
    if (unknown.length) throw new Error(`${where}${typeof d.id === 'string' && d.id ? ` (${d.id})` : ''}: unknown ${keyList(unknown)}; a device has ${DEVICE_KEYS.join(', ')}`);
    const base = d.tier === undefined ? undefined : TIERS[String(d.tier)];
    if (d.tier !== undefined && !base) throw new Error(`${where}.tier: unknown tier "${d.tier}"`);
    // Compute and bandwidth divide a task's work: 0 would be a device that never finishes. Latency may be 0.
    const num = (key: string, fallback: number | undefined, above0: boolean): number => {
      const v = d[key] ?? fallback;
      if (typeof v !== 'number' || !Number.isFinite(v) || (above0 ? v <= 0 : v < 0)) throw new Error(`${where}.${key}: must be a number ${above0 ? 'above 0' : '≥ 0'}${fallback === undefined ? ' (or give a tier)' : ''}`);
      return v;
    };
    const tier: DeviceTier = {
      name: String(d.tier ?? 'trace'),
      gflops: num('gflops', base?.gflops, true),
      upBytesPerSecond: mbit(num('upMbps', base && (base.upBytesPerSecond * 8) / 1e6, true)),
      downBytesPerSecond: mbit(num('downMbps', base && (base.downBytesPerSecond * 8) / 1e6, true)),
      latencySeconds: num('latencyMs', base && base.latencySeconds * 1000, false) / 1000,
    };
    let windows: [number, number][] | undefined;
    if (d.availability !== undefined) {
      const who = typeof d.id === 'string' && d.id ? `${where} (${d.id})` : where;
      const avail: unknown = d.availability;
      if (!Array.isArray(avail)) throw new Error(`${who}: availability must be an array of [start, end] pairs`);
      windows = [];
      const win = (j: number) => `availability[${j}] [${(avail[j] as number[]).join(', ')}]`;
      avail.forEach((w: unknown, j: number) => {
        if (!Array.isArray(w) || w.length !== 2 || !w.every((x) => typeof x === 'number' && Number.isFinite(x))) throw new Error(`${who}: availability[${j}] ${JSON.stringify(w)} must be [start, end], two numbers of seconds`);
        const [s, e] = w as [number, number];
        if (s < 0) throw new Error(`${who}: ${win(j)} starts before 0 (windows are seconds from the start of the run)`);
        if (s >= e) throw new Error(`${who}: ${win(j)} is empty: its start must be below its end`);
        if (j > 0) {
          const [ps, pe] = avail[j - 1] as [number, number];
          if (s < ps) throw new Error(`${who}: ${win(j)} starts before ${win(j - 1)}: list the windows in order of start`);
          if (s < pe) throw new Error(`${who}: ${win(j)} overlaps ${win(j - 1)}: windows must not overlap (merge them into one)`);
        }
        // Back-to-back windows are one stretch online: a task may run across the seam.
        const last = windows!.at(-1);
        if (last && last[1] === s) last[1] = e;
        else windows!.push([s, e]);
      });
    }
    if (typeof d.id !== 'string' || d.id.trim() === '') throw new Error(`${where}.id: every device needs an id (a non-empty string)`);
    if (seen.has(d.id)) throw new Error(`${where}.id: "${d.id}" is already the id of devices[${seen.get(d.id)}]`);
    seen.set(d.id, i);
    return { id: d.id, tier, windows };
  });
}

/** The fields of a trace's device. */
const DEVICE_KEYS = ['id', 'tier', 'gflops', 'upMbps', 'downMbps', 'latencyMs', 'availability'];

/** `key "typo"` or `keys "a", "b"`. */
function keyList(keys: string[]): string {
  return `key${keys.length > 1 ? 's' : ''} ${keys.map((k) => JSON.stringify(k)).join(', ')}`;
}

/** Training FLOPs per sample of an MLP with `params` weights: ~2 forward + 4 backward per weight. */
export function trainFlopsPerSample(params: number): number {
  return 6 * params;
}
