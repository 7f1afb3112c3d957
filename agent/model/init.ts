import { seededRandom } from './rng';
import { type ModelSpec, paramCount, paramLayout } from './spec';

/**
 * Kaiming-uniform weights, U(-sqrt(6/fanIn), +sqrt(6/fanIn)) (suits ReLU), zero biases.
 * Deterministic: the same spec and seed give bit-identical params.
 */
export function initParams(spec: ModelSpec, seed: number): Float32Array {
  const params = new Float32Array(paramCount(spec));
  const rand = seededRandom(seed);
  for (const p of paramLayout(spec)) {
    if (p.shape.length !== 2) continue; // biases stay 0
    const bound = Math.sqrt(6 / p.shape[1]); // shape is [out, in]: fan-in is the second dim
    for (let i = 0; i < p.size; i++) params[p.offset + i] = (rand() * 2 - 1) * bound;
  }
  return params;
}
