import Ajv, { type ErrorObject, type ValidateFunction } from 'ajv';
import { schemaFor, ROLES, type Role, type SchemaNode } from './schema';
import { ConfigError } from './errors';
import type { ConfigFor } from './types';
import { TOO_DEEP, tooDeep } from './merge';

const BROKER_PROTOCOLS = ['mqtt:', 'mqtts:', 'ws:', 'wss:', 'tcp:', 'ssl:', 'tls:'];

function isUri(s: string): boolean {
  if (!/^[a-z][a-z0-9+.-]*:\/\/[^\s]+$/i.test(s)) return false;
  try {
    return new URL(s).hostname.length > 0;
  } catch {
    return false;
  }
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, verbose: true, strict: true, allowUnionTypes: false });
ajv.addFormat('uri', isUri);
// Annotations only: read by restart.ts, redact.ts, env.ts and the pattern messages below.
for (const keyword of ['x-restart-required', 'x-secret']) ajv.addKeyword({ keyword, schemaType: 'boolean' });
ajv.addKeyword({ keyword: 'x-env', schemaType: 'array' });

const validators = new Map<Role, ValidateFunction>();
function validatorFor(role: Role): ValidateFunction {
  let v = validators.get(role);
  if (!v) {
    v = ajv.compile(schemaFor(role));
    validators.set(role, v);
  }
  return v;
}

/** Compiles both schemas (throws if a schema itself is wrong); used by the tests. */
export function compileSchemas(): void {
  for (const role of ROLES) validatorFor(role);
}

const PATTERN_HINTS: Record<string, string> = {
  'data.shard': 'must be "<index>/<count>", e.g. "3/10"',
  'data.partition': 'must be "iid", "dirichlet:<alpha>" (e.g. "dirichlet:0.5") or "owner"',
  'node.id': 'must be one MQTT topic level of at most 64 characters: no "+", "#", "/", white space or leading "$"',
  'fleet.name': 'must be one MQTT topic level of at most 64 characters: no "+", "#", "/", white space or leading "$"',
  'fleet.prefix': 'must be a topic prefix without "+", "#", white space, a leading "$" or a trailing "/"',
  'broker.clientId': 'must be 1 to 128 printable ASCII characters without spaces',
};

/** "/training/threads" -> "training.threads"; "" -> "(root)". */
export function dotted(instancePath: string, child?: string): string {
  const parts = instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  if (child !== undefined) parts.push(child);
  return parts.length ? parts.join('.') : '(root)';
}

/** Edit distance, case-insensitive: for "did you mean" suggestions. */
export function distance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1].toLowerCase() === b[j - 1].toLowerCase() ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length];
}

/** One problem: the dotted path of the setting and what is wrong with it. */
export interface ConfigIssue {
  path: string;
  message: string;
}

function unknownField(e: ErrorObject): ConfigIssue {
  const name = String(e.params.additionalProperty);
  const known = Object.keys((e.parentSchema as SchemaNode | undefined)?.properties ?? {});
  const near = known.map((k) => ({ k, d: distance(name, k) })).filter((x) => x.d <= Math.max(1, Math.floor(x.k.length / 3))).sort((a, b) => a.d - b.d)[0];
  return { path: dotted(e.instancePath, name), message: `unknown setting${near ? `; did you mean "${near.k}"?` : known.length ? `; known here: ${known.join(', ')}` : ''}` };
}

function describe(e: ErrorObject): ConfigIssue {
  const path = dotted(e.instancePath);
  switch (e.keyword) {
    case 'additionalProperties':
      return unknownField(e);
    case 'required':
      return { path: dotted(e.instancePath, String(e.params.missingProperty)), message: 'is required' };
    case 'enum':
      return { path, message: `must be one of ${(e.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')} (got ${JSON.stringify(e.data)})` };
    case 'pattern':
      return { path, message: `${PATTERN_HINTS[path] ?? e.message} (got ${JSON.stringify(e.data)})` };
    case 'type':
      return { path, message: `${e.message} (got ${e.data === null ? 'null' : Array.isArray(e.data) ? 'an array' : `${typeof e.data} ${JSON.stringify(e.data)}`})` };
    default:
      return { path, message: e.message ?? e.keyword };
  }
}

const SHARD = /^\d+\/[1-9]\d*$/;

function get(obj: unknown, path: string): unknown {
  let v = obj;
  for (const k of path.split('.')) v = v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>)[k] : undefined;
  return v;
}

/**
 * Rules across fields. Checked alongside the schema, so that every problem shows at once: each rule
 * only looks at values of the right form (the schema reports the others) and is skipped for a
 * setting the schema already found wrong.
 */
function semanticIssues(role: Role, cfg: unknown, flagged: Set<string>): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const add = (issue: ConfigIssue) => {
    if (!flagged.has(issue.path)) issues.push(issue);
  };
  const url = get(cfg, 'broker.url');
  if (typeof url === 'string' && isUri(url)) {
    const protocol = new URL(url).protocol;
    if (!BROKER_PROTOCOLS.includes(protocol)) add({ path: 'broker.url', message: `must use one of ${BROKER_PROTOCOLS.map((p) => p + '//').join(', ')} (got "${protocol}//")` });
  }
  const [cert, key] = [get(cfg, 'broker.tls.cert'), get(cfg, 'broker.tls.key')];
  if ((cert === undefined) !== (key === undefined)) {
    const [missing, given] = cert === undefined ? ['cert', 'key'] : ['key', 'cert'];
    add({ path: `broker.tls.${missing}`, message: `is required when broker.tls.${given} is set` });
  }
  if (role === 'agent') {
    const shard = get(cfg, 'data.shard');
    if (typeof shard === 'string' && SHARD.test(shard)) {
      const [index, count] = shard.split('/').map(Number);
      if (index >= count) add({ path: 'data.shard', message: `the index must be below the count (got "${shard}")` });
    }
    if (get(cfg, 'data.dataset') === 'csv' && get(cfg, 'data.csv.file') === undefined) add({ path: 'data.csv.file', message: 'is required when data.dataset is "csv"' });
  }
  return issues;
}

export const formatIssue = (i: ConfigIssue): string => `${i.path}: ${i.message}`;

/**
 * Checks settings against the role's schema and fills in the defaults, without throwing: the
 * filled-in copy (the argument is not changed) or every problem found.
 */
export function checkConfig<R extends Role>(obj: unknown, role: R): { config?: ConfigFor<R>; issues: ConfigIssue[] } {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    return { issues: [{ path: '(root)', message: `must be a mapping of settings (got ${obj === null ? 'null' : Array.isArray(obj) ? 'an array' : typeof obj})` }] };
  }
  if (tooDeep(obj)) return { issues: [{ path: '(root)', message: TOO_DEEP }] };
  const copy = structuredClone(obj);
  const validate = validatorFor(role);
  const seen = new Set<string>();
  const schemaIssues = validate(copy) ? [] : (validate.errors ?? []).map(describe).filter((i) => !seen.has(formatIssue(i)) && seen.add(formatIssue(i)));
  const issues = [...schemaIssues, ...semanticIssues(role, copy, new Set(schemaIssues.map((i) => i.path)))];
  return issues.length ? { issues } : { config: copy as ConfigFor<R>, issues };
}

/**
 * Validates settings against the role's schema and fills in the defaults. Returns a new object
 * (the argument is not changed); throws a ConfigError listing every problem.
 */
export function validateConfig<R extends Role>(obj: unknown, role: R): ConfigFor<R> {
  const { config, issues } = checkConfig(obj, role);
  if (!config) throw new ConfigError(issues.map(formatIssue));
  return config;
}

/** The defaults of a role: what an empty file means. */
export function defaultConfig<R extends Role>(role: R): ConfigFor<R> {
  return validateConfig({}, role);
}
