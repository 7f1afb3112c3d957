import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { logger, type Logger } from '../log';
import { CorruptStateError, moveAside, removeTempFiles, writeFileAtomic } from './atomic';

/**
 * Updates not yet delivered, one file per update, so that a broker outage or a restart loses none.
 *
 * Entry file `<id>.fgo`: "FGOB", u32 LE format version 1, u32 LE header length, the header as
 * UTF-8 JSON ({id, round, taskId, createdAt, bytes, sha256, meta}), then the payload.
 */
const MAGIC = Buffer.from('FGOB');
const FORMAT = 1;
const EXT = '.fgo';

export interface OutboxOptions {
  /** Largest entry (header and payload) accepted by `put`; default 64 MiB. */
  maxEntryBytes?: number;
  /** Entries older than this are dropped by `list`/`prune`; default 24 h. */
  maxAgeMs?: number;
  /** Clock, for tests. */
  now?: () => number;
  log?: Logger;
}

export interface OutboxEntry {
  /** `r<round>-<16 hex of sha256(taskId)>`: the same update put twice is one entry. */
  id: string;
  round: number;
  taskId: string;
  /** Milliseconds since the epoch. */
  createdAt: number;
  meta: Record<string, unknown>;
  payload: Buffer;
}

interface Header {
  id: string;
  round: number;
  taskId: string;
  createdAt: number;
  bytes: number;
  sha256: string;
  meta: Record<string, unknown>;
}

export const DEFAULT_OUTBOX_MAX_ENTRY_BYTES = 64 * 1024 * 1024;
export const DEFAULT_OUTBOX_MAX_AGE_MS = 24 * 3600 * 1000;

export function outboxId(round: number, taskId: string): string {
  return `r${round}-${createHash('sha256').update(taskId).digest('hex').slice(0, 16)}`;
}

function decode(file: Buffer): OutboxEntry {
  if (file.length < 12 || !file.subarray(0, 4).equals(MAGIC)) throw new Error('not an outbox entry (bad magic)');
  const version = file.readUInt32LE(4);
  if (version !== FORMAT) throw new Error(`unknown outbox format version ${version}`);
  const headerLength = file.readUInt32LE(8);
  if (12 + headerLength > file.length) throw new Error('truncated header');
  const h = JSON.parse(file.subarray(12, 12 + headerLength).toString('utf8')) as Header;
  const payload = file.subarray(12 + headerLength);
  if (payload.length !== h.bytes) throw new Error(`payload is ${payload.length} bytes, the header says ${h.bytes}`);
  if (createHash('sha256').update(payload).digest('hex') !== h.sha256) throw new Error('payload checksum mismatch');
  if (!Number.isSafeInteger(h.round) || typeof h.taskId !== 'string' || h.id !== outboxId(h.round, h.taskId)) throw new Error('header does not match its id');
  return { id: h.id, round: h.round, taskId: h.taskId, createdAt: h.createdAt, meta: h.meta, payload };
}

export class Outbox {
  readonly maxEntryBytes: number;
  readonly maxAgeMs: number;
  private readonly now: () => number;
  private readonly log: Logger;

  private constructor(readonly dir: string, opts: OutboxOptions) {
    this.maxEntryBytes = opts.maxEntryBytes ?? DEFAULT_OUTBOX_MAX_ENTRY_BYTES;
    this.maxAgeMs = opts.maxAgeMs ?? DEFAULT_OUTBOX_MAX_AGE_MS;
    this.now = opts.now ?? Date.now;
    this.log = opts.log ?? logger('outbox');
  }

  /** Opens (creating) the outbox folder and deletes temporary files a crash left behind. */
  static async open(dir: string, opts: OutboxOptions = {}): Promise<Outbox> {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const leftovers = await removeTempFiles(dir);
    const box = new Outbox(dir, opts);
    if (leftovers.length) box.log.warn({ files: leftovers }, 'removed unfinished outbox writes left by a crash');
    return box;
  }

  private file(id: string): string {
    return path.join(this.dir, id + EXT);
  }

  /** Stores an update durably (atomic write); replaces an entry with the same round and task id. */
  async put(round: number, taskId: string, meta: Record<string, unknown>, payload: Uint8Array): Promise<OutboxEntry> {
    if (!Number.isSafeInteger(round) || round < 0) throw new RangeError(`round must be a whole number >= 0, got ${round}`);
    if (typeof taskId !== 'string' || taskId.length === 0) throw new TypeError('taskId must be a non-empty string');
    if (!(payload instanceof Uint8Array)) throw new TypeError('payload must be a Uint8Array');
    const id = outboxId(round, taskId);
    const body = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
    const header: Header = { id, round, taskId, createdAt: this.now(), bytes: body.length, sha256: createHash('sha256').update(body).digest('hex'), meta };
    const head = Buffer.from(JSON.stringify(header), 'utf8');
    const total = 12 + head.length + body.length;
    if (total > this.maxEntryBytes) throw new RangeError(`outbox entry for round ${round} task ${taskId} is ${total} bytes, above the cap of ${this.maxEntryBytes}`);
    const prefix = Buffer.alloc(12);
    MAGIC.copy(prefix, 0);
    prefix.writeUInt32LE(FORMAT, 4);
    prefix.writeUInt32LE(head.length, 8);
    await writeFileAtomic(this.file(id), Buffer.concat([prefix, head, body]));
    return { id, round, taskId, createdAt: header.createdAt, meta, payload: Buffer.from(body) };
  }

  /**
   * The pending entries, oldest round first. Entries older than maxAgeMs are deleted; a corrupt one
   * is moved aside (`*.corrupt-<time>`) and logged as an error, never returned.
   */
  async list(): Promise<OutboxEntry[]> {
    const names = (await fs.readdir(this.dir)).filter((n) => n.endsWith(EXT)).sort();
    const entries: OutboxEntry[] = [];
    for (const name of names) {
      const file = path.join(this.dir, name);
      let entry: OutboxEntry;
      try {
        const bytes = await fs.readFile(file);
        try {
          entry = decode(bytes);
        } catch (err) {
          const movedTo = await moveAside(file);
          this.log.error({ err: new CorruptStateError(file, (err as Error).message, movedTo).message }, 'corrupt outbox entry skipped');
          continue;
        }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed meanwhile
        throw err;
      }
      if (this.now() - entry.createdAt > this.maxAgeMs) {
        await fs.rm(file, { force: true });
        this.log.warn({ id: entry.id, round: entry.round, ageMs: this.now() - entry.createdAt }, 'dropped an outbox entry older than maxAgeMs');
        continue;
      }
      entries.push(entry);
    }
    return entries.sort((a, b) => a.round - b.round || a.createdAt - b.createdAt);
  }

  /** Deletes an entry (once delivered, or once its round has closed); false if there was none. */
  async remove(id: string): Promise<boolean> {
    if (!/^r\d+-[0-9a-f]{16}$/.test(id)) throw new TypeError(`"${id}" is not an outbox entry id`);
    try {
      await fs.unlink(this.file(id));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /** Drops the entries older than maxAgeMs (and corrupt ones); returns how many remain. */
  async prune(): Promise<number> {
    return (await this.list()).length;
  }
}
