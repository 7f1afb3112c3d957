import { type DType, type GraphBuilder, elemType, float, floatTensor, int, int64Tensor } from './graph';
import { type ModelSpec, paramLayout } from './spec';

/** Graph-level tensor names of one dense layer's parameters. */
export interface LayerParams { W: string; b: string }

export interface Forward {
  /** Input of each layer (x, then the activations), index i feeds layer i. */
  inputs: string[];
  /** Pre-activation of each layer; the last one is the logits. */
  pre: string[];
  logits: string;
}

/** Pairs up the param layout as [{W1,b1}, {W2,b2}, ...] using `rename` to map a param name to a graph name. */
export function layerParams(spec: ModelSpec, rename: (param: string) => string = (p) => p): LayerParams[] {
  const layout = paramLayout(spec);
  return spec.layers.map((_, i) => ({ W: rename(layout[2 * i].name), b: rename(layout[2 * i + 1].name) }));
}

/** Declares every param as a graph input with its exact shape. */
export function paramInputs(g: GraphBuilder, spec: ModelSpec, dtype: DType, rename: (p: string) => string = (p) => p): void {
  for (const p of paramLayout(spec)) g.input(rename(p.name), elemType(dtype), p.shape);
}

/** x @ W + b per layer, ReLU where asked. */
export function emitForward(g: GraphBuilder, spec: ModelSpec, params: LayerParams[], x: string, logitsName?: string): Forward {
  const inputs: string[] = [];
  const pre: string[] = [];
  let h = x;
  spec.layers.forEach((layer, i) => {
    inputs.push(h);
    const last = i === spec.layers.length - 1;
    const z = g.node('Gemm', [h, params[i].W, params[i].b], {}, last ? logitsName : undefined);
    pre.push(z);
    h = layer.activation === 'relu' ? g.node('Relu', [z]) : z;
  });
  return { inputs, pre, logits: pre[pre.length - 1] };
}

/** Scalar constants a train step needs, declared once per graph (and visible inside Scan bodies). */
export interface StepConstants { zero: string; minusOne: string; axis0: string }

export function stepConstants(g: GraphBuilder, dtype: DType): StepConstants {
  return {
    zero: g.initializer(floatTensor(g.fresh('zero'), dtype, [], [0])),
    minusOne: g.initializer(floatTensor(g.fresh('minus_one'), dtype, [], [-1])),
    axis0: g.initializer(int64Tensor(g.fresh('axis0'), [1], [0])),
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
 * One plain-SGD step on a batch: forward, mean softmax cross-entropy against one-hot `y`, backward
 * pass written out, update. The upstream gradient is scaled by lr/B once at the logits, so that
 * every update is a single fused op: W_new = Gemm(h^T, g, W, alpha=-1, beta=1), b_new = b - sum_rows(g).
 */
export function emitTrainStep(
  g: GraphBuilder,
  spec: ModelSpec,
  dtype: DType,
  c: StepConstants,
  params: LayerParams[],
  io: { x: string; y: string; lr: string; batch?: BatchScalars; loss?: string; out?: LayerParams[] },
): StepOutputs {
  const { negInvB, scale } = io.batch ?? batchScalars(g, io.x, 0, io.lr, dtype, c);
  const fwd = emitForward(g, spec, params, io.x);
  const logp = g.node('LogSoftmax', [fwd.logits], { axis: int(1) });
  const llSum = g.node('ReduceSum', [g.node('Mul', [io.y, logp])], { keepdims: int(0) });
  const loss = g.node('Mul', [llSum, negInvB], {}, io.loss);

  let grad = g.node('Mul', [g.node('Sub', [g.node('Exp', [logp]), io.y]), scale]);
  const newParams: LayerParams[] = new Array(params.length);
  for (let i = spec.layers.length - 1; i >= 0; i--) {
    const { W, b } = params[i];
    // dh uses the old W, so emit it before this layer's update is consumed anywhere.
    const dh = i > 0 ? g.node('Gemm', [grad, W], { transB: int(1) }) : '';
    newParams[i] = {
      W: g.node('Gemm', [fwd.inputs[i], grad, W], { transA: int(1), alpha: float(-1), beta: float(1) }, io.out?.[i].W),
      b: g.node('Sub', [b, g.node('ReduceSum', [grad, c.axis0], { keepdims: int(0) })], {}, io.out?.[i].b),
    };
    if (i > 0) {
      const active = spec.layers[i - 1].activation === 'relu';
      // ReLU' as a mask on the layer's output (h > 0 iff z > 0): z keeps a single consumer, so ORT can fuse Gemm+Relu.
      grad = active ? g.node('Where', [g.node('Greater', [fwd.inputs[i], c.zero]), dh, c.zero]) : dh;
    }
  }
  return { loss, newParams };
}
