import { type DType, GraphBuilder, elemType, encodeModel, floatTensor } from './graph';
import { emitForward, layerParams, paramInputs } from './layers';
import { type ModelSpec, classCount, paramCount, paramLayout, validateSpec } from './spec';

/**
 * Forward pass: input x [batch, inputSize], output logits [batch, classes]. Without weights the
 * params are graph inputs (reused across rounds); with weights they are baked in as initializers
 * and the result is a standalone .onnx file any ONNX runtime can load.
 */
export function buildInferenceModel(spec: ModelSpec, opts: { dtype?: DType; weights?: Float32Array } = {}): Uint8Array {
  spec = validateSpec(spec);
  const dtype = opts.dtype ?? 'float32';
  const T = elemType(dtype);
  const g = new GraphBuilder(`${spec.name}-inference`);
  if (opts.weights) {
    if (opts.weights.length !== paramCount(spec)) {
      throw new Error(`weights has ${opts.weights.length} values, model ${spec.name} needs ${paramCount(spec)}`);
    }
    for (const p of paramLayout(spec)) {
      g.initializer(floatTensor(p.name, dtype, p.shape, opts.weights.subarray(p.offset, p.offset + p.size)));
    }
  } else {
    paramInputs(g, spec, dtype);
  }
  const x = g.input('x', T, ['batch', spec.inputSize]);
  emitForward(g, spec, layerParams(spec), x, 'logits');
  g.output('logits', T, ['batch', classCount(spec)]);
  return encodeModel(g.build(), `fedgate inference model for ${spec.name}`);
}
