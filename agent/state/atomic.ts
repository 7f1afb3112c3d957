import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';

/** Temporary files of writeFileAtomic: `.<name>.<pid>.<random>.tmp`, beside their target. */
export const TEMP_FILE = /^\..+\.\d+\.[0-9a-f]{8}\.tmp$/;

/** A state file that cannot be read as what it should hold. It has been moved aside, never used. */
export class CorruptStateError extends Error {
  override readonly name = 'CorruptStateError';
  constructor(readonly file: string, readonly reason: string, readonly movedTo: string) {
    super(`state file ${file} is corrupt (${reason}); it was moved aside to ${movedTo} and was not used`);
  }
}

async function syncDir(dir: string): Promise<void> {
  let fh: fs.FileHandle | undefined;
  try {
    fh = await fs.open(dir, 'r');
    await fh.sync();
  } catch {
    // Some file systems cannot fsync a directory; the rename is still atomic there.
  } finally {
    await fh?.close();
  }
}

/**
 * Writes `data` so that `file` holds either its old or its new content, never a mix, even after a
 * power cut: a temporary file in the same directory, fsync, rename over the target, fsync the
 * directory. A crash leaves at most a temporary file, which readers ignore and `removeTempFiles` cleans.
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await fs.open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
    await fh.close();
    await fs.rename(tmp, file);
  } catch (err) {
    await fh.close().catch(() => undefined);
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await syncDir(dir);
}

/** Deletes the temporary files a crashed writer left in `dir`; returns their names. */
export async function removeTempFiles(dir: string): Promise<string[]> {
  const names = (await fs.readdir(dir).catch(() => [] as string[])).filter((n) => TEMP_FILE.test(n));
  await Promise.all(names.map((n) => fs.rm(path.join(dir, n), { force: true })));
  return names;
}

/** `node-id` -> `node-id.corrupt-2026-01-31T12-00-00-000Z` (renamed, so nothing reads it again). */
export async function moveAside(file: string, now = new Date()): Promise<string> {
  const base = `${file}.corrupt-${now.toISOString().replace(/[:.]/g, '-')}`;
  // Two corrupt copies within one millisecond must not overwrite each other: count up.
  for (let n = 0; ; n++) {
    const to = n === 0 ? base : `${base}-${n}`;
    try {
      await fs.access(to);
    } catch {
      await fs.rename(file, to);
      return to;
    }
  }
}

/** The file's bytes, or undefined if there is no such file. */
export async function readIfExists(file: string): Promise<Buffer | undefined> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * Reads and checks a state file: `parse` returns the value or throws with the reason. A file that
 * fails is moved aside and a CorruptStateError thrown. Undefined if there is no file.
 */
export async function readStateFile<T>(file: string, parse: (bytes: Buffer) => T): Promise<T | undefined> {
  const bytes = await readIfExists(file);
  if (bytes === undefined) return undefined;
  try {
    return parse(bytes);
  } catch (err) {
    const movedTo = await moveAside(file);
    throw new CorruptStateError(file, (err as Error).message, movedTo);
  }
}

/** JSON.parse that insists on an object. */
export function parseJsonObject(bytes: Buffer): Record<string, unknown> {
  const v = JSON.parse(bytes.toString('utf8'));
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
  return v;
}
