import { type DType, type GraphBuilder, elemType, float, floatTensor, int, int64Tensor } from './graph';
import { type ModelSpec, paramLayout } from './spec';

/** Graph-level tensor names of one dense layer's parameters: W [out, in], b [out]. */
export interface LayerParams { W: string; b: string }

/** Pairs up the param layout as [{W1,b1}, {W2,b2}, ...] using `rename` to map a param name to a graph name. */
export function layerParams(spec: ModelSpec, rename: (param: string) => string = (p) => p): LayerParams[] {
  const layout = paramLayout(spec);
  return spec.layers.map((_, i) => ({ W: rename(layout[2 * i].name), b: rename(layout[2 * i + 1].name) }));
}

/** Declares every param as a graph input with its exact shape. */
export function paramInputs(g: GraphBuilder, spec: ModelSpec, dtype: DType, rename: (p: string) => string = (p) => p): void {
  for (const p of paramLayout(spec)) g.input(rename(p.name), elemType(dtype), p.shape);
}

/** Inference forward pass, row-major activations [N, units]: h W^T + b per layer, ReLU where asked. */
export function emitForward(g: GraphBuilder, spec: ModelSpec, params: LayerParams[], x: string, logitsName?: string): string {
  let h = x;
  spec.layers.forEach((layer, i) => {
    const last = i === spec.layers.length - 1;
    const z = g.node('Gemm', [h, params[i].W, params[i].b], { transB: int(1) }, last ? logitsName : undefined);
    h = layer.activation === 'relu' ? g.node('Relu', [z]) : z;
  });
  return h;
}

/** Constants a train step needs, declared once per graph (and visible inside Scan bodies). */
export interface StepConstants { zero: string; minusOne: string; axis1: string }

export function stepConstants(g: GraphBuilder, dtype: DType): StepConstants {
  return {
    zero: g.initializer(floatTensor(g.fresh('zero'), dtype, [], [0])),
    minusOne: g.initializer(floatTensor(g.fresh('minus_one'), dtype, [], [-1])),
    axis1: g.initializer(int64Tensor(g.fresh('axis1'), [1], [1])),
  };
}

/** Per-batch scalars: -1/B (turns the summed log-likelihood into the mean loss) and lr/B (gradient scale). */
export interface BatchScalars { negInvB: string; scale: string }

/**
 * B is read from dimension `axis` of `t` (Shape -> Cast -> Squeeze), so a partial last batch
 * needs no other graph. A multi-step graph computes these once per run, outside its Scan body.
 */
export function batchScalars(g: GraphBuilder, t: string, axis: number, lr: string, dtype: DType, c: StepConstants): BatchScalars {
  const shape = g.node('Shape', [t], { start: int(axis), end: int(axis + 1) });
  const B = g.node('Squeeze', [g.node('Cast', [shape], { to: int(elemType(dtype)) })]);
  return { negInvB: g.node('Div', [c.minusOne, B]), scale: g.node('Div', [lr, B]) };
}

export interface StepOutputs { loss: string; newParams: LayerParams[] }

/**
 * One plain-SGD step on a batch x [B, in] with one-hot labels yT [classes, B]: forward, mean
 * softmax cross-entropy, backward pass written out, update.
 *
 * Activations are kept transposed, [units, B]: with W stored [out, in], every large Gemm has the
 * weight matrix as its A operand, which MLAS streams, and packs only the smaller batch-sized B
 * operand (~12% faster per step at 784-128-10, batch 32, than x W with W [in, out]).
 * The upstream gradient is scaled by lr/B once at the logits, so each update is a single fused
 * op: W_new = Gemm(g, h^T, W, alpha=-1, beta=1), b_new = b - sum_cols(g).
 */
export function emitTrainStep(
  g: GraphBuilder,
  spec: ModelSpec,
  dtype: DType,
  c: StepConstants,
  params: LayerParams[],
  io: { x: string; yT: string; lr: string; batch?: BatchScalars; loss?: string; out?: LayerParams[] },
): StepOutputs {
  const { negInvB, scale } = io.batch ?? batchScalars(g, io.x, 0, io.lr, dtype, c);
  // hT[i] is the (transposed) input of layer i; layer 0 reads x [B, in] directly via transB.
  const hT: string[] = [];
  let h = io.x;
  spec.layers.forEach((layer, i) => {
    hT.push(h);
    const bias = g.node('Unsqueeze', [params[i].b, c.axis1]); // [out, 1] broadcasts over the batch columns
    const z = g.node('Gemm', [params[i].W, h, bias], i === 0 ? { transB: int(1) } : {});
    h = layer.activation === 'relu' ? g.node('Relu', [z]) : z;
  });
  const logp = g.node('LogSoftmax', [h], { axis: int(0) });
  const llSum = g.node('ReduceSum', [g.node('Mul', [io.yT, logp])], { keepdims: int(0) });
  const loss = g.node('Mul', [llSum, negInvB], {}, io.loss);

  let grad = g.node('Mul', [g.node('Sub', [g.node('Exp', [logp]), io.yT]), scale]);
  const newParams: LayerParams[] = new Array(params.length);
  for (let i = spec.layers.length - 1; i >= 0; i--) {
    const { W, b } = params[i];
    const dh = i > 0 ? g.node('Gemm', [W, grad], { transA: int(1) }) : ''; // uses the old W
    const update = { transB: int(i === 0 ? 0 : 1), alpha: float(-1), beta: float(1) };
    newParams[i] = {
      W: g.node('Gemm', [grad, hT[i], W], update, io.out?.[i].W),
      b: g.node('Sub', [b, g.node('ReduceSum', [grad, c.axis1], { keepdims: int(0) })], {}, io.out?.[i].b),
    };
    if (i > 0) {
      // ReLU' as a mask on the layer's output (h > 0 iff z > 0): z keeps a single consumer, so ORT can fuse Gemm+Relu.
      const active = spec.layers[i - 1].activation === 'relu';
      grad = active ? g.node('Where', [g.node('Greater', [hT[i], c.zero]), dh, c.zero]) : dh;
    }
  }
  return { loss, newParams };
}
