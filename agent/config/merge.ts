/** Deep merge and diff of plain settings objects (what JSON and YAML parse to). */

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function clone<T>(v: T): T {
  return v === undefined ? v : structuredClone(v);
}

/**
 * `partial` deep-merged over `base`, as a new object (neither argument is changed): objects merge
 * key by key, arrays and scalars replace, `null` removes a setting (its default applies again once
 * validated), `undefined` changes nothing. Keys such as `__proto__` are copied as plain data, never
 * as a prototype, so validation reports them as unknown settings.
 */
export function mergeConfig<T extends object>(base: T, partial: unknown): T {
  if (partial === undefined) return clone(base);
  if (!isPlainObject(partial)) throw new TypeError(`a partial configuration must be an object, got ${partial === null ? 'null' : Array.isArray(partial) ? 'an array' : typeof partial}`);
  return mergeInto(base as Record<string, unknown>, partial) as T;
}

function mergeInto(base: Record<string, unknown>, partial: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(base)) define(out, k, clone(v));
  for (const [k, v] of Object.entries(partial)) {
    if (v === undefined) continue;
    if (v === null) {
      delete out[k];
      continue;
    }
    const old = Object.prototype.hasOwnProperty.call(out, k) ? out[k] : undefined;
    define(out, k, isPlainObject(v) && isPlainObject(old) ? mergeInto(old, v) : clone(v));
  }
  return out;
}

function define(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function leafPaths(v: unknown, prefix: string, out: string[]): void {
  if (isPlainObject(v) && Object.keys(v).length > 0) {
    for (const [k, child] of Object.entries(v)) leafPaths(child, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out.push(prefix);
  }
}

function same(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return Number.isNaN(a) && Number.isNaN(b);
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * The dotted paths of the settings that differ between `a` and `b`, sorted: leaves of objects,
 * whole arrays, and every leaf of a section present on one side only.
 */
export function diffPaths(a: unknown, b: unknown, prefix = ''): string[] {
  const out: string[] = [];
  walk(a, b, prefix, out);
  return [...new Set(out)].sort();
}

function walk(a: unknown, b: unknown, prefix: string, out: string[]): void {
  if (isPlainObject(a) && isPlainObject(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) walk(a[k], b[k], prefix ? `${prefix}.${k}` : k, out);
    return;
  }
  if (same(a, b)) return;
  if (isPlainObject(a) || isPlainObject(b)) {
    if (a !== undefined) leafPaths(a, prefix, out);
    if (b !== undefined) leafPaths(b, prefix, out);
    return;
  }
  out.push(prefix);
}
