import { leaves, ROLES, type Role, type SchemaNode } from './schema';
import { distance } from './validate';

/** `training.maxCpuLoad` -> `FEDGATE_TRAINING_MAX_CPU_LOAD`. */
export function envName(path: string): string {
  return 'FEDGATE_' + path.split('.').map((p) => p.replace(/([a-z0-9])([A-Z])/g, '$1_$2')).join('_').toUpperCase();
}

/** Every setting's environment variable names (the derived one first, then aliases from `x-env`). */
export function envVariables(role: Role): Array<{ path: string; names: string[]; node: SchemaNode }> {
  return leaves(role).map(({ path, node }) => ({ path, node, names: [envName(path), ...(node['x-env'] ?? [])] }));
}

/**
 * FEDGATE_ variables that are read directly, not settings: the log format, the compression backend,
 * the data folder of the simulation, benchmarks and tests, the native build, the bench and test
 * switches. Not reported as unknown.
 */
export const OTHER_VARIABLES: readonly string[] = ['FEDGATE_LOG_FORMAT', 'FEDGATE_COMPRESS_BACKEND', 'FEDGATE_DATA_DIR', 'FEDGATE_SKIP_NATIVE', 'FEDGATE_BENCH_QUICK'];
/** Test-only switches (FEDGATE_REQUIRE_MOSQUITTO, FEDGATE_REQUIRE_TOOLS, …). */
const OTHER_PREFIX = 'FEDGATE_REQUIRE_';

export interface EnvOverrides {
  /** The overrides as a partial configuration, ready for mergeConfig. */
  partial: Record<string, unknown>;
  /** Which variable set each overridden setting (dotted path -> name). */
  sources: Map<string, string>;
  /** Values that cannot be read as the setting's type, naming the variable. */
  errors: string[];
  /** FEDGATE_ variables that are no setting of either role (a misspelt name), each with the closest real one. */
  warnings: string[];
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

const strip = (name: string) => name.slice('FEDGATE_'.length).replace(/_/g, '');

/** The known variable closest to `name` (underscores count little: MAXCPULOAD is MAX_CPU_LOAD), if close enough to be a slip. */
function closest(name: string, known: string[]): string | undefined {
  const rest = name.slice('FEDGATE_'.length);
  const scored = known.map((k) => ({ k, d: Math.min(distance(rest, k.slice('FEDGATE_'.length)), distance(strip(name), strip(k))) }));
  const best = scored.sort((a, b) => a.d - b.d)[0];
  return best && best.d <= Math.max(2, Math.floor(rest.length / 4)) ? best.k : undefined;
}

/**
 * Warnings for the FEDGATE_ variables in `env` that neither role reads (the same environment may
 * serve an agent and an aggregator, so one role's variables are no mistake for the other) and
 * that are none of OTHER_VARIABLES: a misspelt setting would otherwise be ignored without a word.
 */
export function unknownVariables(env: NodeJS.ProcessEnv): string[] {
  const settings = ROLES.flatMap((role) => envVariables(role).flatMap((v) => v.names));
  const known = new Set([...settings, ...OTHER_VARIABLES]);
  return Object.keys(env)
    .filter((name) => name.startsWith('FEDGATE_') && env[name] !== '' && !known.has(name) && !name.startsWith(OTHER_PREFIX))
    .sort()
    .map((name) => {
      const near = closest(name, [...known]);
      return `${name} is not a fedgate variable and is ignored; ${near ? `did you mean ${near}?` : 'a setting is FEDGATE_<SECTION>_<NAME> (training.maxCpuLoad: FEDGATE_TRAINING_MAX_CPU_LOAD), see `fedgate config schema`'}`;
    });
}

/**
 * The settings given through environment variables, coerced to the schema's types. An empty
 * variable counts as unset (as `FOO=` in a systemd EnvironmentFile or a compose file usually means).
 * A setting with several names (broker.password: FEDGATE_BROKER_PASSWORD, FEDGATE_MQTT_PASSWORD)
 * may be given by any one of them; by more than one, only with the same value.
 */
export function envOverrides(role: Role, env: NodeJS.ProcessEnv = process.env): EnvOverrides {
  const out: EnvOverrides = { partial: {}, sources: new Map(), errors: [], warnings: unknownVariables(env) };
  for (const { path, names, node } of envVariables(role)) {
    const given = names.filter((n) => env[n] !== undefined && env[n] !== '');
    if (!given.length) continue;
    const name = given[0];
    out.sources.set(path, name);
    if (given.some((n) => env[n] !== env[name])) {
      out.errors.push(`${given.join(' and ')}: both set, to different values; they are one setting (${path}): set one of them`);
      continue;
    }
    const r = coerce(env[name]!, node, name, path);
    if (r.error) out.errors.push(r.error);
    else setPath(out.partial, path, r.value);
  }
  return out;
}
