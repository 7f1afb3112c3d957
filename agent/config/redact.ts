import { isPlainObject } from './merge';

export const REDACTED = '[redacted]';

/** Setting names whose values are secrets wherever they appear (broker.password is one). */
const SECRET_KEY = /(password|passphrase|secret|token)$/i;

/** mqtt://user:pass@host -> mqtt://user:[redacted]@host; other strings unchanged. */
function redactUrl(s: string): string {
  const m = /^([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*):([^@/?#\s]*)@/i.exec(s);
  return m ? `${m[1]}:${REDACTED}@${s.slice(m[0].length)}` : s;
}

/**
 * A copy of a configuration fit to publish or log: secret settings replaced by "[redacted]"
 * (present-but-redacted, so a reader still sees that one is set) and passwords in URLs masked.
 */
export function redactConfig<T>(cfg: T): T {
  return redact(cfg) as T;
}

function redact(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(redact);
  if (typeof v === 'string') return redactUrl(v);
  if (!isPlainObject(v)) return v;
  const out: Record<string, unknown> = {};
  for (const [k, child] of Object.entries(v)) {
    const value = SECRET_KEY.test(k) && child !== undefined && child !== null ? REDACTED : redact(child);
    Object.defineProperty(out, k, { value, enumerable: true, writable: true, configurable: true });
  }
  return out;
}
