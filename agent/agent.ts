import { logger, type Logger } from './log';
import { validateSpec, type ModelSpec } from './model';
import { Trainer } from './train';
import { encodeAsync, ErrorFeedback, backend as compressBackend } from './compress';
import type { Shard } from './data';
import {
  FrameKind, MqttLink, Reassembler, Topics, parseTask, validateNodeId,
  type NodeState, type TaskMessage, type UpdateMeta,
} from './transport';

export const VERSION = '0.1.0';

export interface AgentOptions {
  url: string;
  username?: string;
  password?: string;
  nodeId: string;
  topics: Topics;
  maxPacketBytes?: number;
  /** The gateway's own training data; it never leaves this process. */
  data: Shard;
  /** ONNX Runtime intra-op threads. */
  threads?: number;
  heartbeatSeconds?: number;
  log?: Logger;
}

/**
 * The gateway agent: announces itself (retained state, last will), receives tasks with the global
 * model, trains locally in a worker thread, and sends back its compressed update. Tasks are run one
 * at a time, in order; a task already seen (same task id, e.g. redelivered) is ignored.
 */
export class Agent {
  private link?: MqttLink;
  private trainer?: Trainer;
  private trainerSpec?: string;
  private readonly reassembler = new Reassembler();
  private readonly seenTasks = new Set<string>();
  private queue: Promise<void> = Promise.resolve();
  private heartbeat?: NodeJS.Timeout;
  private readonly session = Date.now();
  private readonly log: Logger;
  private feedback?: ErrorFeedback;
  private busy = false;
  tasksDone = 0;

  constructor(private readonly opts: AgentOptions) {
    validateNodeId(opts.nodeId);
    if (opts.data.n <= 0) throw new Error(`node ${opts.nodeId} has no training data`);
    this.log = opts.log ?? logger('agent', { node: opts.nodeId });
  }

  private state(online: boolean): NodeState {
    return { online, node: this.opts.nodeId, session: this.session, version: VERSION, samples: this.opts.data.n, backend: compressBackend, ts: Date.now() };
  }

  async start(): Promise<void> {
    const { topics, nodeId } = this.opts;
    this.link = await MqttLink.connect({
      url: this.opts.url,
      clientId: nodeId,
      username: this.opts.username,
      password: this.opts.password,
      maxPacketBytes: this.opts.maxPacketBytes,
      stateTopic: topics.nodeState(nodeId),
      birth: () => this.state(true) as unknown as Record<string, unknown>,
      will: this.state(false) as unknown as Record<string, unknown>,
      log: this.log.child({ module: 'transport' }),
    });
    await this.link.subscribe(topics.nodeTask(nodeId), (_topic, payload) => this.onTaskFrame(payload));
    const every = (this.opts.heartbeatSeconds ?? 5) * 1000;
    this.heartbeat = setInterval(() => {
      if (!this.link?.connected) return;
      this.link.publishJson(topics.nodeHeartbeat(nodeId), { node: nodeId, session: this.session, ts: Date.now(), busy: this.busy }, { qos: 0 })
        .catch((err) => this.log.debug({ err: err.message }, 'heartbeat not sent'));
    }, every);
    this.log.info({ samples: this.opts.data.n, compress: compressBackend }, 'agent started');
  }

  async stop(): Promise<void> {
    clearInterval(this.heartbeat);
    await this.link?.close(this.state(false) as unknown as Record<string, unknown>);
    await this.trainer?.close();
  }

  private onTaskFrame(payload: Buffer): void {
    const whole = this.reassembler.push('aggregator', payload);
    if (!whole) return;
    if (whole.kind !== FrameKind.Task) throw new Error(`unexpected frame kind ${whole.kind} on the task topic`);
    const task = parseTask(whole.meta);
    if (whole.payload.byteLength !== task.paramCount * 4) throw new Error(`task ${task.taskId} carries ${whole.payload.byteLength} model bytes, expected ${task.paramCount * 4}`);
    if (this.seenTasks.has(task.taskId)) return;
    this.seenTasks.add(task.taskId);
    const params = new Float32Array(task.paramCount);
    new Uint8Array(params.buffer).set(whole.payload);
    const received = Date.now();
    this.queue = this.queue.then(() => this.runTask(task, params, received)).catch((err) => this.log.error({ round: task.round, err: (err as Error).message }, 'task failed'));
  }

  private async runTask(task: TaskMessage, params: Float32Array, receivedAt: number): Promise<void> {
    const spec = validateSpec(task.spec);
    const trainer = await this.trainerFor(spec);
    if (trainer.samples === 0) await trainer.setData(this.opts.data.x, this.opts.data.labels);
    // The deadline runs from receipt; keep a tenth of it for encoding and upload.
    const left = task.deadlineSeconds * 0.9 - (Date.now() - receivedAt) / 1000;
    const result = await trainer.train({ params, steps: task.steps, batchSize: task.batchSize, lr: task.lr, seed: task.seed, deadlineSeconds: Math.max(0.001, left) });
    let delta = new Float32Array(params.length);
    for (let i = 0; i < delta.length; i++) delta[i] = result.params[i] - params[i];
    const codec = { ...task.codec, seed: task.seed };
    const sparse = task.codec.codec === 'topk' || task.codec.codec === 'topk-int8';
    if (sparse) {
      this.feedback ??= new ErrorFeedback(delta.length);
      delta = this.feedback.compensate(delta);
    }
    const encoded = await encodeAsync(delta, codec);
    if (sparse) this.feedback!.commit(delta, encoded);
    const meta: UpdateMeta = {
      round: task.round,
      taskId: task.taskId,
      node: this.opts.nodeId,
      samples: this.opts.data.n,
      steps: result.steps,
      loss: result.loss,
      trainSeconds: result.seconds,
      paramCount: params.length,
      codec: task.codec.codec,
      stoppedEarly: result.stoppedEarly,
    };
    const bytes = await this.link!.publishFrames(this.opts.topics.nodeUpdate(this.opts.nodeId), FrameKind.Update, meta as unknown as Record<string, unknown>, encoded);
    this.tasksDone++;
    this.log.info({ round: task.round, steps: result.steps, loss: result.loss, seconds: result.seconds, bytes }, 'update sent');
  }

  private async trainerFor(spec: ModelSpec): Promise<Trainer> {
    const key = JSON.stringify(spec);
    if (this.trainer && this.trainerSpec === key) return this.trainer;
    await this.trainer?.close();
    this.trainer = await Trainer.create(spec, { threads: this.opts.threads ?? 1 });
    this.trainerSpec = key;
    return this.trainer;
  }
}
