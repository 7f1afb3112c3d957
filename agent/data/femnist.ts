import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Dataset } from './dataset';
import { datasetFromIdx, readIdxFile } from './idx';

/** FEMNIST classes: 10 digits, 26 upper-case, 26 lower-case letters (LEAF's label order). */
export const FEMNIST_CLASSES = 62;

/**
 * FEMNIST as IDX files (the subset in shared/data/femnist, converted from LEAF): in `dir`,
 * `{train,test}-{images-idx3,labels-idx1,writers-idx1}-ubyte.gz` plus `writers.json` (the writer
 * ids). Pixels are uint8 with 0 = background (as MNIST); `owners[i]` is the writer index of row i,
 * `ownerNames` the writer ids, so `partition(ds, {kind: 'owner'}, …)` gives the natural one
 * writer per client split.
 */
export function loadFemnist(dir: string, split: 'train' | 'test'): Dataset {
  if (split !== 'train' && split !== 'test') throw new Error(`loadFemnist: split must be 'train' or 'test', got ${JSON.stringify(split)}`);
  const file = (kind: string): string => path.join(dir, `${split}-${kind}-ubyte.gz`);
  const name = `femnist-${split}`;
  const ds = datasetFromIdx(readIdxFile(file('images-idx3')), readIdxFile(file('labels-idx1')), FEMNIST_CLASSES, name);
  const writers = readIdxFile(file('writers-idx1'));
  if (writers.dims.length !== 1 || writers.dims[0] !== ds.n) throw new Error(`${name}: writers IDX has dims [${writers.dims.join(', ')}], expected [${ds.n}]`);

  const namesFile = path.join(dir, 'writers.json');
  const writerNames: unknown = JSON.parse(readFileSync(namesFile, 'utf8'));
  if (!Array.isArray(writerNames) || !writerNames.every((w) => typeof w === 'string')) throw new Error(`${namesFile}: expected a JSON array of writer ids (strings)`);
  const owners = Uint32Array.from(writers.data);
  for (let i = 0; i < owners.length; i++) {
    if (owners[i] >= writerNames.length) throw new Error(`${name}: writer index ${owners[i]} at row ${i} but ${namesFile} lists ${writerNames.length} writers`);
  }
  return { ...ds, owners, ownerNames: writerNames as string[] };
}

/**
 * How many writers have rows in `split` of the FEMNIST files in `dir`: the most clients an `owner`
 * partition can serve (partitionOwnerGroups refuses more). Reads only the small writers file.
 */
export function femnistWriterCount(dir: string, split: 'train' | 'test'): number {
  return new Set(readIdxFile(path.join(dir, `${split}-writers-idx1-ubyte.gz`)).data).size;
}
