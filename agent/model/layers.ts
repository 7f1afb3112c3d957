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
export interface StepConstants { zero: string; axis0: string }

export function stepConstants(g: GraphBuilder, dtype: DType): StepConstants {
  return {
    zero: g.initializer(floatTensor(g.fresh('zero'), dtype, [], [0])),
    axis0: g.initializer(int64Tensor(g.fresh('axis0'), [1], [0])),
  };
}

/** Batch size of `x` as a scalar of the float dtype: Shape -> Cast -> Squeeze. */
export function batchSize(g: GraphBuilder, x: string, dtype: DType): string {
  const shape = g.node('Shape', [x], { start: int(0), end: int(1) });
  return g.node('Squeeze', [g.node('Cast', [shape], { to: int(elemType(dtype)) })]);
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
  io: { x: string; y: string; lr: string; loss?: string; out?: LayerParams[] },
): StepOutputs {
  const fwd = emitForward(g, spec, params, io.x);
  const B = batchSize(g, io.x, dtype);
  const logp = g.node('LogSoftmax', [fwd.logits], { axis: int(1) });
  const nllSum = g.node('ReduceSum', [g.node('Mul', [io.y, logp])], { keepdims: int(0) });
  const loss = g.node('Neg', [g.node('Div', [nllSum, B])], {}, io.loss);

  const scale = g.node('Div', [io.lr, B]);
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
      grad = active ? g.node('Where', [g.node('Greater', [fwd.pre[i - 1], c.zero]), dh, c.zero]) : dh;
    }
  }
  return { loss, newParams };
}
