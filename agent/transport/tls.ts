import { readFileSync } from 'node:fs';

/** The `broker.tls` settings: file paths, and whether the broker's certificate must verify. */
export interface TlsSettings {
  ca?: string;
  cert?: string;
  key?: string;
  rejectUnauthorized?: boolean;
}

export interface TlsMaterial {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  rejectUnauthorized?: boolean;
}

/**
 * Reads the PEM files the settings name, each error naming its setting: a missing file, or one
 * that is not PEM (a DER certificate or a wrong path would otherwise surface as "self-signed
 * certificate in certificate chain" on every reconnect).
 */
export function loadTls(tls: TlsSettings | undefined, prefix = 'broker.tls'): TlsMaterial | undefined {
  if (!tls) return undefined;
  const read = (name: 'ca' | 'cert' | 'key'): Buffer | undefined => {
    const file = tls[name];
    if (file === undefined) return undefined;
    let pem: Buffer;
    try {
      pem = readFileSync(file);
    } catch (err) {
      throw new Error(`${prefix}.${name}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    if (!pem.includes('-----BEGIN ')) throw new Error(`${prefix}.${name}: ${file} is not a PEM file (no "-----BEGIN" line)`);
    return pem;
  };
  const material: TlsMaterial = { ca: read('ca'), cert: read('cert'), key: read('key') };
  if (tls.rejectUnauthorized === false) material.rejectUnauthorized = false;
  return material;
}

/** OpenSSL/Node codes of a broker certificate that will not verify however often we retry. */
const CERT_ERRORS = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'CERT_SIGNATURE_FAILURE', 'CERT_REVOKED',
  'CERT_UNTRUSTED', 'CERT_REJECTED', 'ERR_TLS_CERT_ALTNAME_INVALID', 'ERR_SSL_WRONG_VERSION_NUMBER',
]);

/** A one-line reason when `err` is a TLS failure no retry can fix, else undefined. */
export function permanentTlsFailure(err: Error & { code?: unknown }, url: string): string | undefined {
  if (typeof err.code !== 'string' || !CERT_ERRORS.has(err.code)) return undefined;
  if (err.code === 'ERR_SSL_WRONG_VERSION_NUMBER') return `TLS to ${url} failed: the port does not speak TLS (${err.message}); use mqtt:// for a plain listener`;
  return `the broker's TLS certificate at ${url} does not verify: ${err.message} (broker.tls.ca must name the CA that signed it; broker.tls.rejectUnauthorized: false skips the check)`;
}
