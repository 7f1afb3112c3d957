import { type DType, GraphBuilder, elemType, encodeModel, int, subgraph, valueInfo } from './graph';
import { DataType } from './onnx-proto';
import { emitTrainStep, layerParams, paramInputs, stepConstants } from './layers';
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
  emitTrainStep(g, spec, dtype, stepConstants(g, dtype), params, { x, y, lr, loss: 'loss', out });
  g.output('loss', T, []);
  for (const p of paramLayout(spec)) g.output(`${p.name}_new`, T, p.shape);
  return encodeModel(g.build(), `fedgate train step (plain SGD) for ${spec.name}`);
}

/**
 * Several SGD steps per run, as an ONNX Loop over a block of equal-sized batches: inputs are the
 * params, xs [steps, batch, inputSize], ys [steps, batch, classes] and lr; outputs are
 * `<param>_new` after the last step and `losses` [steps] (each step's mean batch loss).
 * Amortises the per-run overhead (feeding and copying out all params) over the block.
 */
export function buildTrainLoopModel(spec: ModelSpec, opts: BuildOptions = {}): Uint8Array {
  spec = validateSpec(spec);
  const dtype = opts.dtype ?? 'float32';
  const T = elemType(dtype);
  const layout = paramLayout(spec);
  const g = new GraphBuilder(`${spec.name}-train-loop`);
  paramInputs(g, spec, dtype);
  const xs = g.input('xs', T, ['steps', 'batch', spec.inputSize]);
  const ys = g.input('ys', T, ['steps', 'batch', classCount(spec)]);
  const lr = g.input('lr', T, []);
  const consts = stepConstants(g, dtype);

  const body = new GraphBuilder('sgd-step', 'body_');
  const iter = body.input('body_iter', DataType.INT64, []);
  const condIn = body.input('body_cond_in', DataType.BOOL, []);
  for (const p of layout) body.input(`body_${p.name}`, T, p.shape);
  const x = body.node('Gather', [xs, iter], { axis: int(0) });
  const y = body.node('Gather', [ys, iter], { axis: int(0) });
  const cur = layerParams(spec, (p) => `body_${p}`);
  const next = layerParams(spec, (p) => `body_${p}_next`);
  body.node('Identity', [condIn], {}, 'body_cond_out');
  emitTrainStep(body, spec, dtype, consts, cur, { x, y, lr, loss: 'body_loss', out: next });
  body.outputs.push(valueInfo('body_cond_out', DataType.BOOL, []));
  for (const p of layout) body.outputs.push(valueInfo(`body_${p.name}_next`, T, p.shape));
  body.outputs.push(valueInfo('body_loss', T, []));

  const tripShape = g.node('Shape', [xs], { start: int(0), end: int(1) });
  const trips = g.node('Squeeze', [tripShape]);
  const outs = [...layout.map((p) => `${p.name}_new`), 'losses'];
  g.multi('Loop', [trips, '', ...layout.map((p) => p.name)], outs, { body: subgraph(body.build()) });
  for (const p of layout) g.output(`${p.name}_new`, T, p.shape);
  g.output('losses', T, ['steps']);
  return encodeModel(g.build(), `fedgate train loop (plain SGD, one step per batch) for ${spec.name}`);
}
