import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { validateNodeId } from '../transport';
import { PermanentConfigError } from '../service/exit';
import { readStateFile, writeFileAtomic } from './atomic';

export const NODE_ID_FILE = 'node-id';

export type NodeIdSource = 'config' | 'stored' | 'generated';

/** `gw-` and 8 random hex digits. Random, never from hardware serials (which containers lack). */
export function generateNodeId(): string {
  return `gw-${randomBytes(4).toString('hex')}`;
}

/** Why a state directory that holds another node's id is refused (exit status 78). */
export function otherNodeMessage(dir: string, stored: string, configured: string): string {
  return `state directory ${dir} belongs to node id ${stored}, not ${configured}: its applied configuration, outbox and residual are ${stored}'s; ` +
    `use --node-id ${stored} (node.id), another --state-dir (stateDir) for ${configured}, or empty the directory`;
}

/**
 * This gateway's node id: the configured one if any (stored, so that removing it from the config
 * later keeps the identity), else the stored one, else a new one generated and stored once.
 * A stored file that is not a valid id is moved aside (CorruptStateError). A configured id other
 * than the stored one is refused (PermanentConfigError, exit status 78): taking the directory over
 * would hand the old node's applied configuration layers and their versions, its outbox and its
 * error-feedback residual to the new one.
 */
export async function resolveNodeId(dir: string, configured?: string): Promise<{ id: string; source: NodeIdSource }> {
  const file = path.join(dir, NODE_ID_FILE);
  const stored = await readStateFile(file, (bytes) => validateNodeId(bytes.toString('utf8').replace(/\n$/, '')));
  if (configured !== undefined) {
    validateNodeId(configured);
    if (stored !== undefined && stored !== configured) throw new PermanentConfigError(otherNodeMessage(dir, stored, configured));
    if (stored === undefined) await writeFileAtomic(file, configured + '\n', 0o644);
    return { id: configured, source: 'config' };
  }
  if (stored !== undefined) return { id: stored, source: 'stored' };
  const id = generateNodeId();
  await writeFileAtomic(file, id + '\n', 0o644);
  return { id, source: 'generated' };
}
