import * as os from 'node:os';
import { AttrType, DataType, modelProtoType } from './onnx-proto';

/** Plain-object shapes of the ONNX messages, as protobufjs's `fromObject` expects them. */
export interface TensorProto { name: string; dims: number[]; data_type: number; raw_data: Uint8Array }
export interface ValueInfo { name: string; type: { tensor_type: { elem_type: number; shape?: { dim: Array<{ dim_value?: number; dim_param?: string }> } } } }
export interface Attribute { name: string; type: number; f?: number; i?: number; ints?: number[]; g?: GraphProto }
export interface NodeProto { op_type: string; input: string[]; output: string[]; name: string; attribute: Attribute[] }
export interface GraphProto { name: string; node: NodeProto[]; initializer: TensorProto[]; input: ValueInfo[]; output: ValueInfo[] }

export type DType = 'float32' | 'float64';
export const elemType = (dtype: DType): number => (dtype === 'float64' ? DataType.DOUBLE : DataType.FLOAT);

export const OPSET = 17;
export const IR_VERSION = 8;

/** Attribute value wrappers: ONNX distinguishes int and float attributes, JS numbers do not. */
export type AttrValue = { int: number } | { float: number } | { ints: number[] } | { graph: GraphProto };
export const int = (v: number): AttrValue => ({ int: v });
export const float = (v: number): AttrValue => ({ float: v });
export const ints = (v: number[]): AttrValue => ({ ints: v });
export const subgraph = (g: GraphProto): AttrValue => ({ graph: g });

function toAttribute(name: string, v: AttrValue): Attribute {
  if ('int' in v) return { name, type: AttrType.INT, i: v.int };
  if ('float' in v) return { name, type: AttrType.FLOAT, f: v.float };
  if ('ints' in v) return { name, type: AttrType.INTS, ints: v.ints };
  return { name, type: AttrType.GRAPH, g: v.graph };
}

if (os.endianness() !== 'LE') throw new Error('fedgate writes ONNX raw_data from typed arrays and needs a little-endian CPU');

type TensorData = Float32Array | Float64Array | BigInt64Array | Uint8Array;

/** A tensor with its data in raw_data (fixed-width little-endian, as the spec requires). */
export function tensor(name: string, dataType: number, dims: number[], data: TensorData): TensorProto {
  return { name, dims, data_type: dataType, raw_data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

export function floatTensor(name: string, dtype: DType, dims: number[], values: ArrayLike<number>): TensorProto {
  const data = dtype === 'float64' ? Float64Array.from(values) : Float32Array.from(values);
  return tensor(name, elemType(dtype), dims, data);
}

export function int64Tensor(name: string, dims: number[], values: number[]): TensorProto {
  return tensor(name, DataType.INT64, dims, BigInt64Array.from(values.map(BigInt)));
}

/** A typed value; `dims` entries are sizes or symbolic names (e.g. 'batch'); omit dims for an unknown shape. */
export function valueInfo(name: string, elem: number, dims?: Array<number | string>): ValueInfo {
  const tensorType: ValueInfo['type']['tensor_type'] = { elem_type: elem };
  if (dims) tensorType.shape = { dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) };
  return { name, type: { tensor_type: tensorType } };
}

/**
 * Accumulates nodes in topological order (callers emit them in order). Node outputs get unique
 * names from a hint unless an exact name is asked for (graph outputs).
 */
export class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  readonly inputs: ValueInfo[] = [];
  readonly outputs: ValueInfo[] = [];
  private counter = 0;

  constructor(readonly name: string, private readonly prefix = '') {}

  input(name: string, elem: number, dims?: Array<number | string>): string {
    this.inputs.push(valueInfo(name, elem, dims));
    return name;
  }

  output(name: string, elem: number, dims?: Array<number | string>): void {
    this.outputs.push(valueInfo(name, elem, dims));
  }

  initializer(t: TensorProto): string {
    this.initializers.push(t);
    return t.name;
  }

  fresh(hint: string): string {
    return `${this.prefix}${hint}_${this.counter++}`;
  }

  /** Adds a single-output node and returns its output's name (`out` if given, else a fresh one). */
  node(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, out?: string): string {
    const output = out ?? this.fresh(op.toLowerCase());
    this.multi(op, inputs, [output], attrs);
    return output;
  }

  multi(op: string, inputs: string[], outputs: string[], attrs: Record<string, AttrValue> = {}): string[] {
    const attribute = Object.entries(attrs).map(([k, v]) => toAttribute(k, v));
    this.nodes.push({ op_type: op, input: inputs, output: outputs, name: this.fresh(`n_${op}`), attribute });
    return outputs;
  }

  build(): GraphProto {
    return { name: this.name, node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs };
  }
}

export function encodeModel(graph: GraphProto, docString: string): Uint8Array {
  const type = modelProtoType();
  const model = {
    ir_version: IR_VERSION,
    opset_import: [{ domain: '', version: OPSET }],
    producer_name: 'fedgate',
    producer_version: '0.1.0',
    doc_string: docString,
    graph,
  };
  return type.encode(type.fromObject(model)).finish();
}
