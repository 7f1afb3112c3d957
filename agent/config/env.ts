import { leaves, type Role, type SchemaNode } from './schema';

/** `training.maxCpuLoad` -> `FEDGATE_TRAINING_MAX_CPU_LOAD`. */
export function envName(path: string): string {
  return 'FEDGATE_' + path.split('.').map((p) => p.replace(/([a-z0-9])([A-Z])/g, '$1_$2')).join('_').toUpperCase();
}

/** Every setting's environment variable names (the derived one first, then aliases from `x-env`). */
export function envVariables(role: Role): Array<{ path: string; names: string[]; node: SchemaNode }> {
  return leaves(role).map(({ path, node }) => ({ path, node, names: [envName(path), ...(node['x-env'] ?? [])] }));
}

export interface EnvOverrides {
  /** The overrides as a partial configuration, ready for mergeConfig. */
  partial: Record<string, unknown>;
  /** Which variable set each overridden setting (dotted path -> name). */
  sources: Map<string, string>;
  /** Values that cannot be read as the setting's type, naming the variable. */
  errors: string[];
}

const TRUE = ['true', '1', 'yes', 'on'];
const FALSE = ['false', '0', 'no', 'off'];

function coerce(raw: string, node: SchemaNode, name: string, path: string): { value?: unknown; error?: string } {
  const bad = (what: string) => ({ error: `${name}: ${JSON.stringify(raw)} is not ${what} (sets ${path})` });
  const s = raw.trim();
  switch (node.type) {
    case 'integer':
      return /^[-+]?\d+$/.test(s) && Number.isSafeInteger(Number(s)) ? { value: Number(s) } : bad('an integer');
    case 'number': {
      const n = Number(s);
      return s !== '' && Number.isFinite(n) ? { value: n } : bad('a number');
    }
    case 'boolean':
      if (TRUE.includes(s.toLowerCase())) return { value: true };
      if (FALSE.includes(s.toLowerCase())) return { value: false };
      return bad('a boolean (true/false, 1/0, yes/no, on/off)');
    case 'array': {
      const item = node.items ?? {};
      let parts: unknown[];
      if (s.startsWith('[')) {
        try {
          parts = JSON.parse(s);
        } catch {
          return bad('a JSON array');
        }
        if (!Array.isArray(parts)) return bad('a JSON array');
        parts = parts.map(String);
      } else {
        parts = s === '' ? [] : s.split(',');
      }
      const values: unknown[] = [];
      for (const p of parts) {
        const r = coerce(String(p), item, name, path);
        if (r.error) return bad(`a comma-separated list of ${item.type ?? 'value'}s`);
        values.push(r.value);
      }
      return { value: values };
    }
    default:
      return { value: raw };
  }
}

function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let cur = obj;
  for (const k of keys.slice(0, -1)) cur = (cur[k] ??= {}) as Record<string, unknown>;
  cur[keys[keys.length - 1]] = value;
}

/**
 * The settings given through environment variables, coerced to the schema's types. An empty
 * variable counts as unset (as `FOO=` in a systemd EnvironmentFile or a compose file usually means).
 */
export function envOverrides(role: Role, env: NodeJS.ProcessEnv = process.env): EnvOverrides {
  const out: EnvOverrides = { partial: {}, sources: new Map(), errors: [] };
  for (const { path, names, node } of envVariables(role)) {
    const name = names.find((n) => env[n] !== undefined && env[n] !== '');
    if (!name) continue;
    const r = coerce(env[name]!, node, name, path);
    if (r.error) out.errors.push(r.error);
    else setPath(out.partial, path, r.value);
    out.sources.set(path, name);
  }
  return out;
}
