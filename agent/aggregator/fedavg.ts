/** Pure aggregation arithmetic: no I/O, no clocks. */

export interface ClientUpdate {
  node: string;
  round: number;
  /** Local training samples the update was computed on (FedAvg weight). */
  samples: number;
  /** Local SGD steps taken. */
  steps: number;
  /** local params − global params, one entry per parameter. */
  delta: Float32Array;
  loss: number;
  /** Seconds the node spent training, as it reports. */
  trainSeconds?: number;
  /** Seconds from sending the task to receiving the whole update, as the aggregator measured. */
  elapsedSeconds?: number;
  batchSize?: number;
}

/** Keeps the first update per (node, round): a redelivered update counts once. */
export function dedupeUpdates<T extends { node: string; round: number }>(updates: readonly T[]): T[] {
  const seen = new Set<string>();
  const out: T[] = [];
  for (const u of updates) {
    const key = `${u.node}\u0000${u.round}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(u);
  }
  return out;
}

/**
 * Weighted mean of the deltas, weights given per update. Accumulates in float64 so the order of
 * arrival does not change the result beyond float32 rounding. Returns undefined when the total
 * weight is not positive (nothing to average: the caller keeps its model).
 */
export function weightedMeanDelta(deltas: readonly Float32Array[], weights: readonly number[]): Float32Array | undefined {
  if (deltas.length !== weights.length) throw new Error(`${deltas.length} deltas but ${weights.length} weights`);
  if (deltas.length === 0) return undefined;
  const length = deltas[0].length;
  let total = 0;
  for (let i = 0; i < weights.length; i++) {
    const w = weights[i];
    if (!Number.isFinite(w) || w < 0) throw new RangeError(`weight ${i} is ${w}; weights must be finite and non-negative`);
    if (deltas[i].length !== length) throw new RangeError(`delta ${i} has ${deltas[i].length} values, expected ${length}`);
    total += w;
  }
  if (!(total > 0)) return undefined;
  const acc = new Float64Array(length);
  for (let i = 0; i < deltas.length; i++) {
    const w = weights[i] / total;
    if (w === 0) continue;
    const d = deltas[i];
    for (let j = 0; j < length; j++) acc[j] += w * d[j];
  }
  return Float32Array.from(acc);
}

/** FedAvg (McMahan et al. 2017): global + Σ nᵢ·Δᵢ / Σ nᵢ, with nᵢ the sample count of update i. */
export function fedAvg(global: Float32Array, updates: readonly ClientUpdate[]): Float32Array | undefined {
  const unique = dedupeUpdates(updates);
  const mean = weightedMeanDelta(unique.map((u) => u.delta), unique.map((u) => u.samples));
  return mean && applyDelta(global, mean);
}

/** global + delta, refusing to produce a non-finite model. */
export function applyDelta(global: Float32Array, delta: Float32Array, scale = 1): Float32Array {
  if (global.length !== delta.length) throw new RangeError(`delta has ${delta.length} values, the model ${global.length}`);
  const out = new Float32Array(global.length);
  for (let j = 0; j < out.length; j++) out[j] = global[j] + scale * delta[j];
  const bad = firstNonFinite(out);
  if (bad >= 0) throw new RangeError(`aggregated model has a non-finite value at index ${bad}`);
  return out;
}

/** Index of the first NaN or ±Inf, or -1. */
export function firstNonFinite(values: ArrayLike<number>): number {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return i;
  return -1;
}
