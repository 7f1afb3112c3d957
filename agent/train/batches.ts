import { seededRandom } from '../model';

/** A run of `steps` consecutive batches of `batchSize` samples, whose indices are `indices` (steps*batchSize of them). */
export interface Block {
  steps: number;
  batchSize: number;
  indices: Uint32Array;
}

/**
 * Splits `steps` minibatch steps over `n` samples into blocks of at most `maxBlockSteps`
 * equal-sized batches. Samples are drawn from a seeded Fisher-Yates shuffle, redone every pass;
 * a pass's last batch (n % batchSize samples) is a block of its own. Pure and deterministic.
 */
export function* planBlocks(n: number, steps: number, batchSize: number, seed: number, maxBlockSteps: number): Generator<Block> {
  if (n === 0 || steps === 0) return;
  const rand = seededRandom(seed);
  let perm = new Uint32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  let pos = n; // forces a shuffle before the first batch
  let left = steps;
  while (left > 0) {
    if (pos >= n) {
      perm = perm.slice(); // a fresh array per pass: blocks already yielded keep their indices
      shuffle(perm, rand);
      pos = 0;
    }
    const full = Math.floor((n - pos) / batchSize);
    if (full === 0) {
      const size = n - pos;
      yield { steps: 1, batchSize: size, indices: perm.subarray(pos, n) };
      pos = n;
      left -= 1;
      continue;
    }
    const k = Math.min(full, left, maxBlockSteps);
    yield { steps: k, batchSize, indices: perm.subarray(pos, pos + k * batchSize) };
    pos += k * batchSize;
    left -= k;
  }
}

function shuffle(a: Uint32Array, rand: () => number): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}
