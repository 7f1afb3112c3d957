import { type ModelSpec, paramLayout } from '../agent/model';

/**
 * The plain-TypeScript baseline: one SGD step of an MLP (ReLU hidden layers, mean softmax
 * cross-entropy) with straightforward loops over Float32Arrays (loop order chosen so the inner
 * loop walks contiguous memory). Updates `params` in place and returns the batch loss.
 */
export function makeTsStep(spec: ModelSpec, maxBatch: number) {
  const layout = paramLayout(spec);
  const sizes = [spec.inputSize, ...spec.layers.map((l) => l.units)];
  const acts = sizes.map((s) => new Float64Array(maxBatch * s)); // acts[0] unused: x is read directly
  const grads = sizes.map((s) => new Float64Array(maxBatch * s));

  return function step(params: Float32Array, x: Float32Array, labels: Uint8Array, B: number, lr: number): number {
    const L = spec.layers.length;
    const input = (l: number) => (l === 0 ? x : acts[l]);
    for (let l = 0; l < L; l++) {
      const [W, b] = [layout[2 * l].offset, layout[2 * l + 1].offset];
      const nin = sizes[l];
      const nout = sizes[l + 1];
      const h = input(l);
      const z = acts[l + 1];
      for (let r = 0; r < B; r++) {
        const zo = r * nout;
        for (let j = 0; j < nout; j++) z[zo + j] = params[b + j];
        for (let i = 0; i < nin; i++) {
          const v = h[r * nin + i];
          const wo = W + i * nout;
          for (let j = 0; j < nout; j++) z[zo + j] += v * params[wo + j];
        }
        if (spec.layers[l].activation === 'relu') for (let j = 0; j < nout; j++) if (z[zo + j] < 0) z[zo + j] = 0;
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
      const nin = sizes[l];
      const nout = sizes[l + 1];
      const h = input(l);
      if (l > 0) {
        const dh = grads[l];
        for (let r = 0; r < B; r++) {
          for (let i = 0; i < nin; i++) {
            if (h[r * nin + i] <= 0) { dh[r * nin + i] = 0; continue; } // ReLU gradient
            let s = 0;
            const wo = W + i * nout;
            for (let j = 0; j < nout; j++) s += g[r * nout + j] * params[wo + j];
            dh[r * nin + i] = s;
          }
        }
      }
      for (let r = 0; r < B; r++) {
        for (let j = 0; j < nout; j++) params[b + j] -= g[r * nout + j];
        for (let i = 0; i < nin; i++) {
          const v = h[r * nin + i];
          const wo = W + i * nout;
          for (let j = 0; j < nout; j++) params[wo + j] -= v * g[r * nout + j];
        }
      }
      g = grads[l];
    }
    return loss / B;
  };
}
