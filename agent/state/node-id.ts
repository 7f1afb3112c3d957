import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { validateNodeId } from '../transport';
import { readStateFile, writeFileAtomic } from './atomic';

export const NODE_ID_FILE = 'node-id';

export type NodeIdSource = 'config' | 'stored' | 'generated';

/** `gw-` and 8 random hex digits. Random, never from hardware serials (which containers lack). */
export function generateNodeId(): string {
  return `gw-${randomBytes(4).toString('hex')}`;
}

/**
 * This gateway's node id: the configured one if any (stored, so that removing it from the config
 * later keeps the identity), else the stored one, else a new one generated and stored once.
 * A stored file that is not a valid id is moved aside (CorruptStateError).
 */
export async function resolveNodeId(dir: string, configured?: string): Promise<{ id: string; source: NodeIdSource }> {
  const file = path.join(dir, NODE_ID_FILE);
  const stored = await readStateFile(file, (bytes) => validateNodeId(bytes.toString('utf8').replace(/\n$/, '')));
  if (configured !== undefined) {
    validateNodeId(configured);
    if (stored !== configured) await writeFileAtomic(file, configured + '\n', 0o644);
    return { id: configured, source: 'config' };
  }
  if (stored !== undefined) return { id: stored, source: 'stored' };
  const id = generateNodeId();
  await writeFileAtomic(file, id + '\n', 0o644);
  return { id, source: 'generated' };
}
