import * as path from 'node:path';
import { parseJsonObject, readStateFile, writeFileAtomic } from './atomic';

export const APPLIED_CONFIG_FILE = 'applied-config.json';

/** The configuration last applied (from MQTT), so a restart starts from it and ignores older versions. */
export interface AppliedConfig {
  /** Only goes up. */
  version: number;
  /** Versions per source, e.g. `{fleet: 3, node: 7}` when the config is the fleet's and the node's merged. */
  sources?: Record<string, number>;
  appliedAt: string;
  config: Record<string, unknown>;
}

/** 0 (nothing applied) to 2^53 - 1: beyond that a double no longer tells consecutive versions apart. */
const isVersion = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const RANGE = `a whole number from 0 to ${Number.MAX_SAFE_INTEGER} (2^53 - 1)`;

function parse(bytes: Buffer): AppliedConfig {
  const o = parseJsonObject(bytes);
  if (!isVersion(o.version)) throw new Error(`version must be ${RANGE}, got ${JSON.stringify(o.version)}`);
  if (typeof o.appliedAt !== 'string') throw new Error('appliedAt is missing');
  if (o.config === null || typeof o.config !== 'object' || Array.isArray(o.config)) throw new Error('config must be an object');
  if (o.sources !== undefined) {
    if (o.sources === null || typeof o.sources !== 'object' || !Object.values(o.sources).every(isVersion)) throw new Error(`sources must map names to versions (${RANGE} each)`);
  }
  return o as unknown as AppliedConfig;
}

export async function readAppliedConfig(dir: string): Promise<AppliedConfig | undefined> {
  return readStateFile(path.join(dir, APPLIED_CONFIG_FILE), parse);
}

/**
 * Stores the applied configuration (file mode 0600: it may hold the broker password). Refuses a
 * version below the stored one (RangeError); the same version again just rewrites it.
 */
export async function writeAppliedConfig(dir: string, version: number, config: Record<string, unknown>, sources?: Record<string, number>): Promise<AppliedConfig> {
  if (!isVersion(version)) throw new RangeError(`config version must be ${RANGE}, got ${version}`);
  // Checked here too: a file holding them would be refused as corrupt on the next read.
  for (const [name, v] of Object.entries(sources ?? {})) if (!isVersion(v)) throw new RangeError(`config version ${version} with sources: ${name} must be ${RANGE}, got ${v}`);
  const current = await readAppliedConfig(dir);
  if (current && version < current.version) throw new RangeError(`config version ${version} is older than the applied version ${current.version}`);
  const applied: AppliedConfig = { version, ...(sources ? { sources } : {}), appliedAt: new Date().toISOString(), config };
  await writeFileAtomic(path.join(dir, APPLIED_CONFIG_FILE), JSON.stringify(applied, null, 2) + '\n', 0o600);
  return applied;
}
