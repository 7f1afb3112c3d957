export type Activation = 'relu' | 'none';

export interface DenseLayer {
  kind: 'dense';
  units: number;
  activation: Activation;
}

/** A feed-forward classifier. The last layer's units are the classes, with activation 'none'; loss is softmax cross-entropy. */
export interface ModelSpec {
  name: string;
  inputSize: number;
  layers: DenseLayer[];
}

/** Where one parameter tensor lives inside the flat Float32Array holding all params (W1, b1, W2, b2, ...); W is [out, in]. */
export interface ParamInfo {
  name: string;
  shape: number[];
  offset: number;
  size: number;
}

export function mlp(inputSize: number, hidden: number[], classes: number): ModelSpec {
  const layers: DenseLayer[] = hidden.map((units) => ({ kind: 'dense', units, activation: 'relu' }));
  layers.push({ kind: 'dense', units: classes, activation: 'none' });
  const name = `mlp-${[inputSize, ...hidden, classes].join('-')}`;
  return validateSpec({ name, inputSize, layers });
}

/** Number of classes: the units of the last layer. */
export function classCount(spec: ModelSpec): number {
  return spec.layers[spec.layers.length - 1].units;
}

/**
 * Weights are stored [out, in] (row-major, PyTorch's nn.Linear convention), so a layer is
 * `x W^T + b`; the train-step graph relies on this layout for speed (see emitTrainStep).
 */
export function paramLayout(spec: ModelSpec): ParamInfo[] {
  const out: ParamInfo[] = [];
  let offset = 0;
  let fanIn = spec.inputSize;
  spec.layers.forEach((layer, i) => {
    const w = { name: `W${i + 1}`, shape: [layer.units, fanIn], offset, size: fanIn * layer.units };
    offset += w.size;
    const b = { name: `b${i + 1}`, shape: [layer.units], offset, size: layer.units };
    offset += b.size;
    out.push(w, b);
    fanIn = layer.units;
  });
  return out;
}

export function paramCount(spec: ModelSpec): number {
  return paramLayout(spec).reduce((n, p) => n + p.size, 0);
}

function positiveInt(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
    throw new Error(`invalid model spec: ${field} must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Checks an untrusted value (e.g. a spec received over MQTT) and returns it typed; the Error names the bad field. */
export function validateSpec(spec: unknown): ModelSpec {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
    throw new Error('invalid model spec: expected an object');
  }
  const s = spec as Record<string, unknown>;
  if (typeof s.name !== 'string' || s.name.length === 0) {
    throw new Error(`invalid model spec: name must be a non-empty string, got ${JSON.stringify(s.name)}`);
  }
  const inputSize = positiveInt(s.inputSize, 'inputSize');
  if (!Array.isArray(s.layers) || s.layers.length === 0) {
    throw new Error('invalid model spec: layers must be a non-empty array');
  }
  const layers: DenseLayer[] = s.layers.map((l: unknown, i: number) => {
    const field = `layers[${i}]`;
    if (typeof l !== 'object' || l === null) throw new Error(`invalid model spec: ${field} must be an object`);
    const layer = l as Record<string, unknown>;
    if (layer.kind !== 'dense') {
      throw new Error(`invalid model spec: ${field}.kind must be 'dense', got ${JSON.stringify(layer.kind)}`);
    }
    const units = positiveInt(layer.units, `${field}.units`);
    if (layer.activation !== 'relu' && layer.activation !== 'none') {
      throw new Error(`invalid model spec: ${field}.activation must be 'relu' or 'none', got ${JSON.stringify(layer.activation)}`);
    }
    return { kind: 'dense', units, activation: layer.activation };
  });
  const last = layers[layers.length - 1];
  if (last.activation !== 'none') {
    throw new Error(`invalid model spec: layers[${layers.length - 1}].activation must be 'none' (the last layer outputs logits)`);
  }
  if (last.units < 2) {
    throw new Error(`invalid model spec: layers[${layers.length - 1}].units must be at least 2 (number of classes)`);
  }
  return { name: s.name, inputSize, layers };
}
