/** A classification dataset held in one flat, row-major buffer. */
export interface Dataset {
  /** Number of rows (samples). */
  n: number;
  /** Values per row (784 for 28×28 images). */
  features: number;
  /** Number of classes; every label is < classes. */
  classes: number;
  /**
   * Row-major `n * features` values. A Uint8Array holds raw pixels 0..255 and is kept that way on
   * purpose (MNIST train is 47 MB as bytes, 188 MB as float32, and every gateway process loads it);
   * `select` converts to [0, 1] float32 only the rows a client actually trains on.
   */
  x: Uint8Array | Float32Array;
  /** Class index per row. */
  labels: Uint8Array;
  /** Index of the device/user owning each row (FEMNIST writer, CSV owner column), if known. */
  owners?: Uint32Array;
  /** Name of each owner index: `ownerNames[owners[i]]`. */
  ownerNames?: string[];
  /** Name of each class index, when the source had class names (CSV string labels). */
  classNames?: string[];
  /** Name of each feature column, when the source had column names (CSV). */
  featureNames?: string[];
  name: string;
}

/** The rows one client trains on: features as float32 (pixels scaled to [0, 1]), labels as class indices. */
export interface Shard {
  x: Float32Array;
  labels: Uint8Array;
  n: number;
}

const BYTE_TO_UNIT = (() => {
  const table = new Float32Array(256);
  for (let i = 0; i < 256; i++) table[i] = i / 255;
  return table;
})();

/**
 * Copies the given rows (in the given order) out of `ds`. Uint8 pixels are normalised to [0, 1]
 * float32; float32 data is copied unchanged. Throws a RangeError on an out-of-range index.
 */
export function select(ds: Dataset, indices: ArrayLike<number>): Shard {
  const { features } = ds;
  const n = indices.length;
  const x = new Float32Array(n * features);
  const labels = new Uint8Array(n);
  for (let r = 0; r < n; r++) {
    const row = indices[r];
    if (!Number.isInteger(row) || row < 0 || row >= ds.n) throw new RangeError(`select: index ${row} at position ${r} is outside 0..${ds.n - 1} of ${ds.name}`);
    labels[r] = ds.labels[row];
  }
  // Separate monomorphic copy loops: one loop over the Uint8Array | Float32Array union ran ~3x slower.
  if (ds.x instanceof Uint8Array) copyBytesAsUnit(ds.x, indices, features, x);
  else copyFloats(ds.x, indices, features, x);
  return { x, labels, n };
}

function copyBytesAsUnit(source: Uint8Array, indices: ArrayLike<number>, features: number, out: Float32Array): void {
  for (let r = 0, to = 0; r < indices.length; r++) {
    const from = indices[r] * features;
    for (let f = 0; f < features; f++, to++) out[to] = BYTE_TO_UNIT[source[from + f]];
  }
}

function copyFloats(source: Float32Array, indices: ArrayLike<number>, features: number, out: Float32Array): void {
  for (let r = 0; r < indices.length; r++) {
    const from = indices[r] * features;
    out.set(source.subarray(from, from + features), r * features);
  }
}

/** Per-class row counts, `counts[c]` = rows labelled c. */
export function classCounts(labels: ArrayLike<number>, classes: number): Uint32Array {
  const counts = new Uint32Array(classes);
  for (let i = 0; i < labels.length; i++) counts[labels[i]]++;
  return counts;
}
