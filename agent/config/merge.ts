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
  if (tooDeep(partial)) throw new TypeError(TOO_DEEP);
  return mergeInto(base as Record<string, unknown>, partial) as T;
}

/** Far above any setting's depth; a payload nested thousands deep (from MQTT) overflowed the stack in the recursive merge and in the schema check. */
const MAX_DEPTH = 32;
export const TOO_DEEP = `a configuration nested more than ${MAX_DEPTH} levels deep is refused (no setting is deeper than 4)`;

export function tooDeep(v: unknown): boolean {
  return nestingDepth(v, MAX_DEPTH) > MAX_DEPTH;
}

/** Levels of objects and arrays in `v`, counted without recursion; stops counting past `limit`. */
function nestingDepth(v: unknown, limit: number): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[v, 1]];
  while (stack.length) {
    const [x, d] = stack.pop()!;
    if (x === null || typeof x !== 'object') continue;
    if (d > deepest) deepest = d;
    if (deepest > limit) return deepest;
    for (const child of Object.values(x)) stack.push([child, d + 1]);
  }
  return deepest;
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
