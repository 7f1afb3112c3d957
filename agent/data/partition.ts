/**
 * Partitioners: split a dataset's row indices over federated clients.
 *
 * All functions are pure (inputs are not modified) and deterministic (same arguments, same seed →
 * same shards). Unless said otherwise, the shards are an exact cover of 0..n-1 (every row in exactly
 * one shard) and each shard's indices are sorted ascending, so a shard reads its rows in file order;
 * shuffle per epoch in the trainer, not here.
 */
import type { Dataset } from './dataset';
import { createRng, shuffleInPlace, type Rng } from './rng';

function checkClients(fn: string, clients: number): void {
  if (!Number.isInteger(clients) || clients < 1) throw new RangeError(`${fn}: clients must be an integer >= 1, got ${clients}`);
}

function sortedShard(values: Uint32Array): Uint32Array {
  return values.sort(); // TypedArray#sort is numeric
}

/** Uniformly random, equal-size shards (sizes differ by at most one: the first n % clients get one more). */
export function partitionIid(n: number, clients: number, seed: number): Uint32Array[] {
  checkClients('partitionIid', clients);
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`partitionIid: n must be a non-negative integer, got ${n}`);
  if (n < clients) throw new RangeError(`partitionIid: cannot give each of ${clients} clients a sample out of ${n}`);
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  shuffleInPlace(order, createRng(seed));
  const base = Math.floor(n / clients);
  const extra = n % clients;
  const shards: Uint32Array[] = [];
  let start = 0;
  for (let c = 0; c < clients; c++) {
    const size = base + (c < extra ? 1 : 0);
    shards.push(sortedShard(order.slice(start, start + size)));
    start += size;
  }
  return shards;
}

export interface DirichletOptions {
  /** Every client must end up with at least this many rows (default 10). */
  minPerClient?: number;
  /** Draws of all class proportions before giving up with an error (default 1000). */
  maxTries?: number;
}

/**
 * One draw from a symmetric Dirichlet(alpha) over `k` outcomes, via normalised Gamma(alpha) draws.
 * For tiny alpha every Gamma draw can underflow to 0; the limit of Dir(alpha) as alpha → 0 puts all
 * mass on one outcome chosen uniformly, which is what is returned then.
 */
export function sampleDirichlet(rng: Rng, alpha: number, k: number): Float64Array {
  const p = new Float64Array(k);
  let sum = 0;
  for (let j = 0; j < k; j++) {
    p[j] = rng.gamma(alpha);
    sum += p[j];
  }
  if (!(sum > 0) || !Number.isFinite(sum)) {
    p.fill(0);
    p[rng.int(k)] = 1;
    return p;
  }
  for (let j = 0; j < k; j++) p[j] /= sum;
  return p;
}

/**
 * Label-skewed non-IID shards, the standard federated-learning setup (Hsu et al. 2019; Li et al.,
 * NIID-Bench 2021): for each class, draw the clients' shares from Dir(alpha) and split that class's
 * shuffled rows accordingly (cut points at floor(cumulative share × class size)). Small alpha → each
 * client sees few classes; large alpha → close to IID. If any client gets fewer than `minPerClient`
 * rows, all proportions are redrawn (the rejection step of the reference code), up to `maxTries` times,
 * then a clear error says what to change.
 */
export function partitionDirichlet(labels: Uint8Array, classes: number, clients: number, alpha: number, seed: number, opts: DirichletOptions = {}): Uint32Array[] {
  const fn = 'partitionDirichlet';
  checkClients(fn, clients);
  if (!(alpha > 0) || !Number.isFinite(alpha)) throw new RangeError(`${fn}: alpha must be a finite number > 0, got ${alpha}`);
  if (!Number.isInteger(classes) || classes < 1) throw new RangeError(`${fn}: classes must be an integer >= 1, got ${classes}`);
  const minPerClient = opts.minPerClient ?? 10;
  const maxTries = opts.maxTries ?? 1000;
  if (!Number.isInteger(minPerClient) || minPerClient < 0) throw new RangeError(`${fn}: minPerClient must be a non-negative integer, got ${minPerClient}`);
  if (!Number.isInteger(maxTries) || maxTries < 1) throw new RangeError(`${fn}: maxTries must be an integer >= 1, got ${maxTries}`);
  const n = labels.length;
  if (minPerClient * clients > n) throw new RangeError(`${fn}: ${clients} clients × minPerClient ${minPerClient} exceeds the ${n} samples`);

  // Rows of each class, in ascending order.
  const classSize = new Uint32Array(classes);
  for (let i = 0; i < n; i++) {
    if (labels[i] >= classes) throw new RangeError(`${fn}: label ${labels[i]} at row ${i} is not below classes = ${classes}`);
    classSize[labels[i]]++;
  }
  const rowsOfClass = Array.from(classSize, (size) => new Uint32Array(size));
  const fill = new Uint32Array(classes);
  for (let i = 0; i < n; i++) rowsOfClass[labels[i]][fill[labels[i]]++] = i;

  const rng = createRng(seed);
  // cuts[k][j] = end (exclusive) of client j's slice of class k's shuffled rows.
  const cuts = Array.from({ length: classes }, () => new Uint32Array(clients));
  for (let attempt = 1; attempt <= maxTries; attempt++) {
    const clientSize = new Float64Array(clients);
    for (let k = 0; k < classes; k++) {
      const p = sampleDirichlet(rng, alpha, clients);
      const size = classSize[k];
      let cumulative = 0;
      let previous = 0;
      for (let j = 0; j < clients; j++) {
        cumulative += p[j];
        const end = j === clients - 1 ? size : Math.min(size, Math.floor(cumulative * size));
        cuts[k][j] = end;
        clientSize[j] += end - previous;
        previous = end;
      }
    }
    let smallest = Infinity;
    for (let j = 0; j < clients; j++) smallest = Math.min(smallest, clientSize[j]);
    if (smallest < minPerClient) continue;

    const shards = Array.from(clientSize, (size) => new Uint32Array(size));
    const filled = new Uint32Array(clients);
    for (let k = 0; k < classes; k++) {
      const rows = shuffleInPlace(rowsOfClass[k].slice(), rng);
      let start = 0;
      for (let j = 0; j < clients; j++) {
        const end = cuts[k][j];
        shards[j].set(rows.subarray(start, end), filled[j]);
        filled[j] += end - start;
        start = end;
      }
    }
    return shards.map(sortedShard);
  }
  throw new Error(
    `${fn}: after ${maxTries} draws some client still had fewer than ${minPerClient} samples ` +
      `(alpha ${alpha}, ${clients} clients, ${n} samples); raise alpha, use fewer clients, or lower minPerClient`,
  );
}

export interface OwnerShard {
  owner: number;
  indices: Uint32Array;
}

/**
 * The natural federated split: one shard per owner (FEMNIST writer, station, device), ordered by
 * owner index, rows ascending. Owners with fewer than `minSamples` rows (default 1) are left out,
 * so with minSamples > 1 the result is no longer an exact cover.
 */
export function partitionByOwner(owners: Uint32Array, opts: { minSamples?: number } = {}): OwnerShard[] {
  const minSamples = opts.minSamples ?? 1;
  let ownerCount = 0;
  for (let i = 0; i < owners.length; i++) if (owners[i] >= ownerCount) ownerCount = owners[i] + 1;
  const counts = new Uint32Array(ownerCount);
  for (let i = 0; i < owners.length; i++) counts[owners[i]]++;
  const shards: (Uint32Array | undefined)[] = Array.from(counts, (count) => (count > 0 && count >= minSamples ? new Uint32Array(count) : undefined));
  const filled = new Uint32Array(ownerCount);
  for (let i = 0; i < owners.length; i++) {
    const shard = shards[owners[i]];
    if (shard) shard[filled[owners[i]]++] = i;
  }
  const result: OwnerShard[] = [];
  shards.forEach((indices, owner) => {
    if (indices) result.push({ owner, indices });
  });
  return result;
}

export interface OwnerGroup {
  /** Owner indices served by this client. */
  owners: number[];
  /** Their rows, ascending. */
  indices: Uint32Array;
}

/**
 * Assigns whole owners to `clients` clients (a gateway serving several devices or users), an exact
 * cover of the rows. With as many clients as owners (that have rows), client i is the i-th owner in
 * index order (so FEMNIST writer i or station i is gateway i); with fewer clients, the owners are
 * shuffled with `seed` and dealt out round-robin. More clients than owners is an error.
 */
export function partitionOwnerGroups(owners: Uint32Array, clients: number, seed: number): OwnerGroup[] {
  checkClients('partitionOwnerGroups', clients);
  const byOwner = partitionByOwner(owners);
  if (clients > byOwner.length) throw new RangeError(`partitionOwnerGroups: ${clients} clients but only ${byOwner.length} owners with data; use at most ${byOwner.length} clients, or an iid/dirichlet partition`);
  const order = byOwner.map((_, i) => i);
  if (clients < byOwner.length) shuffleInPlace(order, createRng(seed));
  const members: number[][] = Array.from({ length: clients }, () => []);
  order.forEach((shardIndex, position) => members[position % clients].push(shardIndex));
  return members.map((shardIndices) => {
    shardIndices.sort((a, b) => a - b);
    const size = shardIndices.reduce((sum, s) => sum + byOwner[s].indices.length, 0);
    const indices = new Uint32Array(size);
    let offset = 0;
    for (const s of shardIndices) {
      indices.set(byOwner[s].indices, offset);
      offset += byOwner[s].indices.length;
    }
    return { owners: shardIndices.map((s) => byOwner[s].owner), indices: sortedShard(indices) };
  });
}

export type PartitionSpec = { kind: 'iid' } | { kind: 'dirichlet'; alpha: number } | { kind: 'owner' };

const DECIMAL = /^[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/** Parses a command-line partition spec: `iid`, `dirichlet:<alpha>` (alpha a finite number > 0) or `owner`. */
export function parsePartition(s: string): PartitionSpec {
  const text = String(s).trim();
  if (text === 'iid') return { kind: 'iid' };
  if (text === 'owner') return { kind: 'owner' };
  if (text.startsWith('dirichlet:')) {
    const value = text.slice('dirichlet:'.length).trim();
    const alpha = Number(value);
    if (!DECIMAL.test(value) || !Number.isFinite(alpha) || alpha <= 0) {
      throw new Error(`invalid partition ${JSON.stringify(s)}: alpha must be a finite number > 0, e.g. dirichlet:0.5`);
    }
    return { kind: 'dirichlet', alpha };
  }
  throw new Error(`invalid partition ${JSON.stringify(s)}: expected 'iid', 'dirichlet:<alpha>' (e.g. dirichlet:0.5) or 'owner'`);
}

/** Applies a partition spec to a dataset; 'owner' needs `ds.owners` and groups owners as in partitionOwnerGroups. */
export function partition(ds: Dataset, spec: PartitionSpec, clients: number, seed: number): Uint32Array[] {
  switch (spec.kind) {
    case 'iid':
      return partitionIid(ds.n, clients, seed);
    case 'dirichlet':
      return partitionDirichlet(ds.labels, ds.classes, clients, spec.alpha, seed);
    case 'owner':
      if (!ds.owners) throw new Error(`partition: ${ds.name} has no owner per row; 'owner' needs a dataset with owners (FEMNIST writers, a CSV owner column)`);
      return partitionOwnerGroups(ds.owners, clients, seed).map((group) => group.indices);
    default:
      throw new Error(`partition: unknown partition kind ${JSON.stringify((spec as { kind: unknown }).kind)}`);
  }
}
