import { type DType, GraphBuilder, elemType, encodeModel, int, ints, subgraph } from './graph';
import { batchScalars, emitTrainStep, layerParams, paramInputs, stepConstants } from './layers';
import { type ModelSpec, classCount, paramLayout, validateSpec } from './spec';

export interface BuildOptions { dtype?: DType }

/**
 * One SGD step per run. Inputs: every param by name, x [batch, inputSize], y [batch, classes]
 * one-hot, lr (scalar). Outputs: loss (mean cross-entropy over the batch) and `<param>_new`.
 */
export function buildTrainStepModel(spec: ModelSpec, opts: BuildOptions = {}): Uint8Array {
  spec = validateSpec(spec);
  const dtype = opts.dtype ?? 'float32';
  const T = elemType(dtype);
  const g = new GraphBuilder(`${spec.name}-train-step`);
  paramInputs(g, spec, dtype);
  const x = g.input('x', T, ['batch', spec.inputSize]);
  const y = g.input('y', T, ['batch', classCount(spec)]);
  const lr = g.input('lr', T, []);
  const params = layerParams(spec);
  const out = layerParams(spec, (p) => `${p}_new`);
  const yT = g.node('Transpose', [y], { perm: ints([1, 0]) });
  emitTrainStep(g, spec, dtype, stepConstants(g, dtype), params, { x, yT, lr, loss: 'loss', out });
  g.output('loss', T, []);
  for (const p of paramLayout(spec)) g.output(`${p.name}_new`, T, p.shape);
  return encodeModel(g.build(), `fedgate train step (plain SGD) for ${spec.name}`);
}

/**
 * Several SGD steps per run, as an ONNX Scan over a block of equal-sized batches: inputs are the
 * params, xs [steps, batch, inputSize], ys [steps, batch, classes] and lr; outputs are
 * `<param>_new` after the last step and `losses` [steps] (each step's mean batch loss).
 * Amortises the per-run overhead (feeding and copying out all params) over the block. Scan
 * (params as state, batches as scan inputs) measured ~3% faster than a Loop with Gather. The
 * batch size is the same for every step of a block; a partial last batch goes in a block of its own.
 */
export function buildTrainBlockModel(spec: ModelSpec, opts: BuildOptions = {}): Uint8Array {
  spec = validateSpec(spec);
  const dtype = opts.dtype ?? 'float32';
  const T = elemType(dtype);
  const layout = paramLayout(spec);
  const classes = classCount(spec);
  const g = new GraphBuilder(`${spec.name}-train-block`);
  paramInputs(g, spec, dtype);
  const xs = g.input('xs', T, ['steps', 'batch', spec.inputSize]);
  const ys = g.input('ys', T, ['steps', 'batch', classes]);
  const lr = g.input('lr', T, []);
  const consts = stepConstants(g, dtype);
  const batch = batchScalars(g, ys, 1, lr, dtype, consts); // same B for every step of a block
  const ysT = g.node('Transpose', [ys], { perm: ints([0, 2, 1]) }); // one-hot as [classes, batch] per step

  const body = new GraphBuilder('sgd-step', 'body_');
  paramInputs(body, spec, dtype, (p) => `body_${p}`);
  const x = body.input('body_x', T, ['batch', spec.inputSize]);
  const yT = body.input('body_yT', T, [classes, 'batch']);
  const cur = layerParams(spec, (p) => `body_${p}`);
  const next = layerParams(spec, (p) => `body_${p}_next`);
  emitTrainStep(body, spec, dtype, consts, cur, { x, yT, lr, batch, loss: 'body_loss', out: next });
  for (const p of layout) body.output(`body_${p.name}_next`, T, p.shape);
  body.output('body_loss', T, []);

  const outs = [...layout.map((p) => `${p.name}_new`), 'losses'];
  g.multi('Scan', [...layout.map((p) => p.name), xs, ysT], outs, { body: subgraph(body.build()), num_scan_inputs: int(2) });
  for (const p of layout) g.output(`${p.name}_new`, T, p.shape);
  g.output('losses', T, ['steps']);
  return encodeModel(g.build(), `fedgate train block (plain SGD, one step per batch, Scan) for ${spec.name}`);
}
