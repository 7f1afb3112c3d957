import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { writeFileAtomic } from '../state';

/**
 * Checkpoint file: "FGCK", u32 LE JSON length, JSON state, float32 LE params, u32 LE CRC-32 of all
 * that precedes it. Written to a temporary file, fsynced and renamed over the old one, so a crash
 * leaves either the old checkpoint or the new one, never a torn file.
 */
const MAGIC = Buffer.from('FGCK');

export interface Checkpoint<S = Record<string, unknown>> {
  /** Last completed round. */
  round: number;
  params: Float32Array;
  state: S;
}

export async function saveCheckpoint(file: string, ckpt: Checkpoint): Promise<void> {
  const json = Buffer.from(JSON.stringify({ round: ckpt.round, paramCount: ckpt.params.length, state: ckpt.state }));
  const head = Buffer.alloc(8);
  MAGIC.copy(head, 0);
  head.writeUInt32LE(json.length, 4);
  const params = Buffer.from(ckpt.params.buffer, ckpt.params.byteOffset, ckpt.params.byteLength);
  const body = Buffer.concat([head, json, params]);
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(crc32(body), 0);
  await fs.mkdir(path.dirname(path.resolve(file)), { recursive: true });
  await writeFileAtomic(file, Buffer.concat([body, tail]), 0o644);
}

export async function loadCheckpoint<S = Record<string, unknown>>(file: string): Promise<Checkpoint<S>> {
  let buf: Buffer;
  try {
    buf = await fs.readFile(file);
  } catch (err) {
    throw new Error(`cannot read checkpoint ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (buf.length < 12 || !buf.subarray(0, 4).equals(MAGIC)) throw new Error(`${file} is not a fedgate checkpoint`);
  const stored = buf.readUInt32LE(buf.length - 4);
  if (crc32(buf.subarray(0, buf.length - 4)) !== stored) throw new Error(`checkpoint ${file} is corrupted (checksum mismatch)`);
  const jsonLength = buf.readUInt32LE(4);
  const meta = JSON.parse(buf.toString('utf8', 8, 8 + jsonLength)) as { round: number; paramCount: number; state: S };
  const start = 8 + jsonLength;
  if (buf.length - 4 - start !== meta.paramCount * 4) throw new Error(`checkpoint ${file} holds ${(buf.length - 4 - start) / 4} params, its header says ${meta.paramCount}`);
  const params = new Float32Array(meta.paramCount);
  Buffer.from(params.buffer).set(buf.subarray(start, start + meta.paramCount * 4));
  return { round: meta.round, params, state: meta.state };
}
