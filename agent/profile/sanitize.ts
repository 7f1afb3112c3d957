/**
 * What systeminformation (and the kernel) hand back when they do not know: null, undefined, NaN,
 * -1 (older versions' "no sensor"), '' and placeholder strings. Every one becomes `null`
 * ("unknown") here, so that no NaN ever reaches a profile, a score or a decision.
 *
 * Temperature: readings outside (0, 150] °C are unknown. -1 is systeminformation's old "no sensor"
 * and 0 is what several VMs and containers report from a thermal zone that is not wired to a real
 * sensor; a running CPU die is never at or below 0 °C, so a real reading is never lost this way
 * (and an unknown temperature never pauses training).
 */

export type Known<T> = T | null;

/** A finite number (numeric strings accepted, as some systeminformation fields are strings), else null. */
export function knownNumber(v: unknown, range: { min?: number; max?: number; above?: number } = {}): number | null {
  let n: number;
  if (typeof v === 'number') n = v;
  else if (typeof v === 'string' && v.trim() !== '') n = Number(v.trim());
  else return null;
  if (!Number.isFinite(n)) return null;
  if (range.min !== undefined && n < range.min) return null;
  if (range.above !== undefined && n <= range.above) return null;
  if (range.max !== undefined && n > range.max) return null;
  return n;
}

/** Bytes, cores, GHz, samples/s: strictly positive, else unknown (0 and -1 are "not reported"). */
export const knownPositive = (v: unknown, max = Number.MAX_VALUE): number | null => knownNumber(v, { above: 0, max });

/** A whole count >= 1 (cores). */
export function knownCount(v: unknown): number | null {
  const n = knownPositive(v);
  return n !== null && Number.isInteger(n) ? n : null;
}

/** CPU temperature in °C: (0, 150], see above. */
export const knownTemperature = (v: unknown): number | null => knownNumber(v, { above: 0, max: 150 });

/** A percentage 0..100 (battery charge). -1 and out-of-range values are unknown. */
export const knownPercent = (v: unknown): number | null => knownNumber(v, { min: 0, max: 100 });

/** A fraction 0..1 (load). Slight overshoots from counter granularity are clamped; NaN is unknown. */
export function knownFraction(v: unknown): number | null {
  const n = knownNumber(v);
  return n === null ? null : Math.min(1, Math.max(0, n));
}

const PLACEHOLDERS = new Set(['', '-', 'unknown', 'n/a', 'none', 'default string', 'to be filled by o.e.m.', 'not specified']);

/** A trimmed string, or null for empty strings and firmware placeholders. */
export function knownString(v: unknown): string | null {
  if (typeof v !== 'string') return null;
  const s = v.trim().replace(/\s+/g, ' ');
  return PLACEHOLDERS.has(s.toLowerCase()) ? null : s;
}

export const knownBoolean = (v: unknown): boolean | null => (typeof v === 'boolean' ? v : null);

/**
 * Deep copy of a JSON-like value with every non-finite number (NaN, ±Infinity) replaced by null and
 * undefined object fields dropped: the last line of defence before a profile is published.
 */
export function scrubNumbers<T>(value: T): T {
  if (typeof value === 'number') return (Number.isFinite(value) ? value : null) as T;
  if (Array.isArray(value)) return value.map((v) => scrubNumbers(v)) as T;
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = scrubNumbers(v);
    return out as T;
  }
  return value;
}
