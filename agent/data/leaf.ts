import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Dataset } from './dataset';

export interface LeafJsonOptions {
  /**
   * Replace every value v by 1 - v. LEAF's FEMNIST stores pixels as grey/255 of the NIST scans,
   * so background is 1.0 and ink is near 0; pass `invert: true` to get the IDX/MNIST convention
   * (0 = background) used by loadFemnist and loadMnist.
   */
  invert?: boolean;
  /** Number of classes; default: largest label + 1 (62 for full FEMNIST, but a subset may lack the last classes). */
  classes?: number;
}

interface LeafFile {
  users: string[];
  num_samples?: number[];
  user_data: Record<string, { x: number[][]; y: number[] }>;
}

function leafFiles(pathOrDir: string): string[] {
  if (!statSync(pathOrDir).isDirectory()) return [pathOrDir];
  const files = readdirSync(pathOrDir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => path.join(pathOrDir, f));
  if (files.length === 0) throw new Error(`loadLeafJson: no *.json files in ${pathOrDir}`);
  return files;
}

function parseLeafFile(file: string): LeafFile {
  const data = JSON.parse(readFileSync(file, 'utf8')) as Partial<LeafFile>;
  if (!data || !Array.isArray(data.users) || typeof data.user_data !== 'object' || data.user_data === null) {
    throw new Error(`${file}: not a LEAF JSON file (expected {users: [...], num_samples: [...], user_data: {user: {x, y}}})`);
  }
  return data as LeafFile;
}

/**
 * LEAF's JSON format (`{users, num_samples, user_data: {user: {x: [[...features]], y: [...labels]}}}`),
 * from one file or every *.json in a folder (files in name order, users in each file's `users`
 * order; a user appearing in several files keeps one owner index). Rows are stored as Float32Array
 * exactly as given (see `invert`); `owners` is the user index, `ownerNames` the user ids.
 * Whole files are parsed with JSON.parse: a full LEAF FEMNIST file (~100 writers) needs a few
 * hundred MB while loading; the returned dataset holds only the float32 rows.
 */
export function loadLeafJson(pathOrDir: string, opts: LeafJsonOptions = {}): Dataset {
  const files = leafFiles(pathOrDir);
  const ownerNames: string[] = [];
  const ownerIndex = new Map<string, number>();
  const chunks: { owner: number; x: number[][]; y: number[]; file: string; user: string }[] = [];
  let features = -1;
  let n = 0;
  for (const file of files) {
    const leaf = parseLeafFile(file);
    for (const user of leaf.users) {
      const data = leaf.user_data[user];
      if (!data || !Array.isArray(data.x) || !Array.isArray(data.y)) throw new Error(`${file}: user ${user} has no {x, y} in user_data`);
      if (data.x.length !== data.y.length) throw new Error(`${file}: user ${user} has ${data.x.length} rows in x but ${data.y.length} labels in y`);
      for (const row of data.x) {
        if (!Array.isArray(row)) throw new Error(`${file}: user ${user}: x must be an array of numeric rows`);
        if (features === -1) features = row.length;
        if (row.length !== features) throw new Error(`${file}: user ${user} has a row of ${row.length} values, expected ${features}`);
      }
      let owner = ownerIndex.get(user);
      if (owner === undefined) {
        owner = ownerNames.length;
        ownerIndex.set(user, owner);
        ownerNames.push(user);
      }
      chunks.push({ owner, x: data.x, y: data.y, file, user });
      n += data.y.length;
    }
  }
  if (features <= 0) throw new Error(`loadLeafJson: no samples in ${pathOrDir}`);

  const x = new Float32Array(n * features);
  const labels = new Uint8Array(n);
  const owners = new Uint32Array(n);
  let maxLabel = 0;
  let row = 0;
  for (const chunk of chunks) {
    for (let i = 0; i < chunk.y.length; i++, row++) {
      const label = chunk.y[i];
      if (!Number.isInteger(label) || label < 0 || label > 255) throw new Error(`${chunk.file}: user ${chunk.user}: label ${JSON.stringify(label)} is not a class index 0..255`);
      labels[row] = label;
      owners[row] = chunk.owner;
      maxLabel = Math.max(maxLabel, label);
      const values = chunk.x[i];
      const offset = row * features;
      for (let f = 0; f < features; f++) {
        const v = values[f];
        if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${chunk.file}: user ${chunk.user}: non-numeric value ${JSON.stringify(v)} in x`);
        x[offset + f] = opts.invert ? 1 - v : v;
      }
    }
  }
  const classes = opts.classes ?? maxLabel + 1;
  if (maxLabel >= classes) throw new Error(`loadLeafJson: label ${maxLabel} is not below classes = ${classes}`);
  return { n, features, classes, x, labels, owners, ownerNames, name: `leaf:${path.basename(pathOrDir)}` };
}
