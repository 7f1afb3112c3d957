/**
 * agent/state — what a gateway keeps across restarts, in one locked directory: its node id, the
 * config version applied, the error-feedback residual file, and an outbox of undelivered updates.
 * Every write is atomic; a corrupt file is moved aside with a clear error, never used.
 */
export { StateDir, resolveStateDir, ensureStateDir, RESIDUAL_FILE, OUTBOX_DIR, type StateDirOptions } from './state-dir';
export { Outbox, outboxId, DEFAULT_OUTBOX_MAX_AGE_MS, DEFAULT_OUTBOX_MAX_ENTRY_BYTES, type OutboxEntry, type OutboxOptions } from './outbox';
export { resolveNodeId, generateNodeId, NODE_ID_FILE, type NodeIdSource } from './node-id';
export { readAppliedConfig, writeAppliedConfig, APPLIED_CONFIG_FILE, type AppliedConfig } from './applied-config';
export { acquireLock, StateLockedError, LOCK_FILE, type StateLock } from './lock';
export { writeFileAtomic, readStateFile, moveAside, removeTempFiles, CorruptStateError, TEMP_FILE } from './atomic';
