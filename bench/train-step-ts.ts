import { type ModelSpec, paramLayout } from '../agent/model';

/**
 * The plain-TypeScript baseline: one SGD step of an MLP (ReLU hidden layers, mean softmax
 * cross-entropy, W stored [out, in] as in paramLayout) with straightforward loops, each inner
 * loop walking contiguous memory. Updates `params` in place and returns the batch loss.
 */
export function makeTsStep(spec: ModelSpec, maxBatch: number) {
  const layout = paramLayout(spec);
  const sizes = [spec.inputSize, ...spec.layers.map((l) => l.units)];
  const acts = sizes.map((s) => new Float64Array(maxBatch * s)); // acts[0] unused: x is read directly
  const grads = sizes.map((s) => new Float64Array(maxBatch * s));

  return function step(params: Float32Array, x: Float32Array, labels: Uint8Array, B: number, lr: number): number {
    const L = spec.layers.length;
    const input = (l: number): ArrayLike<number> => (l === 0 ? x : acts[l]);
    for (let l = 0; l < L; l++) {
      const [W, b] = [layout[2 * l].offset, layout[2 * l + 1].offset];
      const [nin, nout] = [sizes[l], sizes[l + 1]];
      const h = input(l);
      const z = acts[l + 1];
      const relu = spec.layers[l].activation === 'relu';
      for (let r = 0; r < B; r++) {
        for (let j = 0; j < nout; j++) {
          let s = params[b + j];
          const wo = W + j * nin;
          const ho = r * nin;
          for (let i = 0; i < nin; i++) s += h[ho + i] * params[wo + i];
          z[r * nout + j] = relu && s < 0 ? 0 : s;
        }
      }
    }
    const C = sizes[L];
    const logits = acts[L];
    let g = grads[L];
    let loss = 0;
    for (let r = 0; r < B; r++) {
      let max = -Infinity;
      for (let c = 0; c < C; c++) max = Math.max(max, logits[r * C + c]);
      let sum = 0;
      for (let c = 0; c < C; c++) sum += Math.exp(logits[r * C + c] - max);
      loss += Math.log(sum) + max - logits[r * C + labels[r]];
      for (let c = 0; c < C; c++) g[r * C + c] = (Math.exp(logits[r * C + c] - max) / sum - (c === labels[r] ? 1 : 0)) * (lr / B);
    }
    for (let l = L - 1; l >= 0; l--) {
      const [W, b] = [layout[2 * l].offset, layout[2 * l + 1].offset];
      const [nin, nout] = [sizes[l], sizes[l + 1]];
      const h = input(l);
      if (l > 0) {
        const dh = grads[l];
        dh.fill(0, 0, B * nin);
        for (let r = 0; r < B; r++) {
          for (let j = 0; j < nout; j++) {
            const gj = g[r * nout + j];
            const wo = W + j * nin;
            for (let i = 0; i < nin; i++) dh[r * nin + i] += gj * params[wo + i];
          }
          for (let i = 0; i < nin; i++) if (h[r * nin + i] <= 0) dh[r * nin + i] = 0; // ReLU gradient
        }
      }
      for (let r = 0; r < B; r++) {
        for (let j = 0; j < nout; j++) {
          const gj = g[r * nout + j];
          params[b + j] -= gj;
          const wo = W + j * nin;
          for (let i = 0; i < nin; i++) params[wo + i] -= gj * h[r * nin + i];
        }
      }
      g = grads[l];
    }
    return loss / B;
  };
}
