import Ajv, { type ValidateFunction } from 'ajv';

/**
 * Every JSON message of the protocol, typed and validated against a JSON schema (ajv): a malformed
 * message is refused with the field and the reason, never half-used.
 */

export type CodecName = 'none' | 'int8' | 'int4' | 'topk' | 'topk-int8';

export interface CodecChoice {
  codec: CodecName;
  blockSize?: number;
  stochastic?: boolean;
  k?: number;
}

/** Retained on `node/<id>/state`. `session` grows on every start, so a stale will can be told from a fresh birth. */
export interface NodeState {
  online: boolean;
  node: string;
  session: number;
  version?: string;
  samples?: number;
  /** Values per row of the node's data, and how many labels it can hold (its largest + 1): the aggregator leaves out a node whose data does not fit the job's model. */
  features?: number;
  labels?: number;
  backend?: string;
  /** A codec pinned by the node's own configuration; the aggregator honours it. */
  codec?: CodecChoice;
  /** Random per process, to tell two agents that share a node id apart. */
  instance?: string;
  ts: number;
}

/**
 * Retained on `aggregator/state`. `session` (the start time, ms) and `instance` (random per process)
 * tell two aggregators apart; `starting` marks one still checking that no other runs its fleet (it
 * carries no `round`/`open` then, so gateways take no notice of it).
 */
export interface AggregatorState {
  online: boolean;
  role?: string;
  session: number;
  instance?: string;
  starting?: boolean;
  round?: number;
  open?: boolean;
  ts?: number;
}

export interface Heartbeat {
  node: string;
  session: number;
  ts: number;
  busy?: boolean;
}

/**
 * The aggregator's instructions to one node for one round: the metadata of the binary frames on
 * `node/<id>/task`, whose payload is the global model (float32 LE) to start from. Task and model
 * travel as one unit, so a node can never hold one without the other.
 */
export interface TaskMessage {
  round: number;
  taskId: string;
  /** The model description; the node builds its graphs from it. */
  spec: Record<string, unknown>;
  /** Local SGD steps to run. */
  steps: number;
  batchSize: number;
  lr: number;
  /** Time allowed for the task, as a duration from its receipt (never a wall-clock time: clocks differ). */
  deadlineSeconds: number;
  codec: CodecChoice;
  seed: number;
  paramCount: number;
}

/** Metadata frame header of an update on `node/<id>/update`. */
export interface UpdateMeta {
  round: number;
  taskId: string;
  node: string;
  samples: number;
  steps: number;
  loss: number;
  trainSeconds: number;
  paramCount: number;
  codec: CodecName;
  stoppedEarly: boolean;
}

/**
 * Metadata of a TaskFailed frame on `node/<id>/update` (no payload): the node could not do its task
 * (training or encoding threw) and says so at once, so the aggregator records why and does not wait
 * for it until the deadline. `reason` is the error message, at most TASK_FAILURE_REASON_MAX characters.
 */
export interface TaskFailure {
  round: number;
  taskId: string;
  node: string;
  reason: string;
}

export const TASK_FAILURE_REASON_MAX = 1000;

const codecs = ['none', 'int8', 'int4', 'topk', 'topk-int8'];
const int = (minimum = 0) => ({ type: 'integer', minimum });
const codecChoice = {
  type: 'object',
  required: ['codec'],
  properties: {
    codec: { enum: codecs },
    blockSize: int(1),
    stochastic: { type: 'boolean' },
    k: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
  },
  additionalProperties: false,
};

const schemas = {
  nodeState: {
    type: 'object',
    required: ['online', 'node', 'session', 'ts'],
    properties: { online: { type: 'boolean' }, node: { type: 'string', minLength: 1 }, session: { type: 'number' }, version: { type: 'string' }, samples: int(), features: int(), labels: int(), backend: { type: 'string' }, codec: codecChoice, instance: { type: 'string' }, ts: { type: 'number' } },
  },
  aggregatorState: {
    type: 'object',
    required: ['online', 'session'],
    properties: { online: { type: 'boolean' }, role: { type: 'string' }, session: { type: 'number' }, instance: { type: 'string' }, starting: { type: 'boolean' }, round: int(), open: { type: 'boolean' }, ts: { type: 'number' } },
  },
  heartbeat: {
    type: 'object',
    required: ['node', 'session', 'ts'],
    properties: { node: { type: 'string', minLength: 1 }, session: { type: 'number' }, ts: { type: 'number' }, busy: { type: 'boolean' } },
  },
  task: {
    type: 'object',
    required: ['round', 'taskId', 'spec', 'steps', 'batchSize', 'lr', 'deadlineSeconds', 'codec', 'seed', 'paramCount'],
    properties: {
      round: int(1),
      taskId: { type: 'string', minLength: 1, maxLength: 128 },
      spec: { type: 'object' },
      steps: int(0),
      batchSize: int(1),
      lr: { type: 'number', exclusiveMinimum: 0 },
      deadlineSeconds: { type: 'number', exclusiveMinimum: 0 },
      codec: codecChoice,
      seed: { type: 'integer' },
      paramCount: int(1),
    },
  },
  updateMeta: {
    type: 'object',
    required: ['round', 'taskId', 'node', 'samples', 'steps', 'loss', 'trainSeconds', 'paramCount', 'codec', 'stoppedEarly'],
    properties: {
      round: int(1),
      taskId: { type: 'string', minLength: 1 },
      node: { type: 'string', minLength: 1 },
      samples: int(0),
      steps: int(0),
      loss: { type: 'number' },
      trainSeconds: { type: 'number', minimum: 0 },
      paramCount: int(1),
      codec: { enum: codecs },
      stoppedEarly: { type: 'boolean' },
    },
  },
  taskFailure: {
    type: 'object',
    required: ['round', 'taskId', 'node', 'reason'],
    properties: {
      round: int(1),
      taskId: { type: 'string', minLength: 1, maxLength: 128 },
      node: { type: 'string', minLength: 1 },
      reason: { type: 'string', minLength: 1, maxLength: TASK_FAILURE_REASON_MAX },
    },
  },
} as const;

const ajv = new Ajv({ allErrors: true, strict: false });
const compiled = new Map<string, ValidateFunction>();

export class MessageError extends Error {
  override name = 'MessageError';
}

function parser<T>(name: keyof typeof schemas) {
  return (value: unknown): T => {
    let validate = compiled.get(name);
    if (!validate) compiled.set(name, (validate = ajv.compile(schemas[name])));
    if (!validate(value)) {
      const why = (validate.errors ?? []).map((e) => `${e.instancePath || '(root)'} ${e.message}`).join('; ');
      throw new MessageError(`invalid ${name} message: ${why}`);
    }
    return value as T;
  };
}

/** Parses a JSON payload; throws MessageError on bad JSON. */
export function parseJson(payload: Buffer | string, what: string): unknown {
  try {
    return JSON.parse(payload.toString());
  } catch (err) {
    throw new MessageError(`${what} is not valid JSON: ${(err as Error).message}`);
  }
}

export const parseNodeState = parser<NodeState>('nodeState');
export const parseAggregatorState = parser<AggregatorState>('aggregatorState');
export const parseHeartbeat = parser<Heartbeat>('heartbeat');
export const parseTask = parser<TaskMessage>('task');
export const parseUpdateMeta = parser<UpdateMeta>('updateMeta');
export const parseTaskFailure = parser<TaskFailure>('taskFailure');
