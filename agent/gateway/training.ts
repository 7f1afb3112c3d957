import { validateSpec, paramCount, type ModelSpec } from '../model';
import { Trainer, type TrainResult } from '../train';
import { encodeAsync, ErrorFeedback, type CodecOptions } from '../compress';
import { calibrateTraining } from '../profile';
import type { Shard } from '../data';
import type { OutboxEntry } from '../state';
import { FrameKind, Reassembler, decodeFrame, parseTask, parseJson, TASK_FAILURE_REASON_MAX, type TaskFailure, type TaskMessage, type UpdateMeta } from '../transport';
import type { Feature, FeatureContext } from './context';
import { tierDutyCycle, transferSeconds, type TierEmulation } from './emulation';

export interface TrainingOptions {
  data: Shard;
  threads?: number;
  emulation?: TierEmulation;
}

export interface TrainingStatus {
  tasksDone: number;
  running?: { round: number; taskId: string; steps: number };
  lastRound?: number;
  pendingUpdates: number;
  dutyCycle: number;
  paused: boolean;
}

const sleep = (s: number) => new Promise((r) => setTimeout(r, Math.max(0, s * 1000)));

/**
 * The training feature: receives tasks (with the model to start from), trains in a worker thread,
 * compresses the delta (error feedback for sparse codecs, persisted across restarts) and sends it.
 * Every update is written to the outbox before it is sent and removed once the broker has it, so a
 * broker outage or a restart loses nothing: pending updates are sent again once the aggregator says
 * their round is still open.
 */
export class TrainingFeature implements Feature {
  readonly name = 'training';
  private trainer?: Trainer;
  private trainerKey?: string;
  private hostSamplesPerSecond = 0;
  private readonly reassembler = new Reassembler();
  private readonly seen = new Set<string>();
  private readonly firstChunkAt = new Map<number, number>();
  private queue: Promise<void> = Promise.resolve();
  private feedback?: ErrorFeedback;
  private running?: TrainingStatus['running'];
  private lastRound?: number;
  private tasksDone = 0;
  private guardDuty = 1;
  private inFlight = new Set<string>();
  private roundState?: { round: number; open: boolean; ts: number };
  /**
   * Outbox entries the broker has acknowledged, with the `ts` of the aggregator state in force when
   * they went out. A PUBACK only means the broker has it: after a broker restart the aggregator may
   * not have been subscribed yet, so an entry stays until its round closes and is sent again (the
   * aggregator counts a node's update once) when the aggregator announces itself anew.
   */
  private readonly delivered = new Map<string, number>();
  private stopped = false;

  constructor(private readonly ctx: FeatureContext, private readonly opts: TrainingOptions) {}

  async start(): Promise<void> {
    const { link, topics, nodeId, bus } = this.ctx;
    await link.subscribe(topics.nodeTask(nodeId), (_t, payload) => this.onTaskFrame(payload));
    await link.subscribe(topics.aggregatorState, (_t, payload) => {
      if (payload.length === 0) return;
      const s = parseJson(payload, 'aggregator state') as { online?: unknown; round?: unknown; open?: unknown; session?: unknown; ts?: unknown };
      if (typeof s.round !== 'number' || typeof s.open !== 'boolean') return;
      // An offline aggregator (its last will, which a clean broker shutdown delivers, or its goodbye) says
      // nothing about the round: the will was written when it connected. Pending updates wait for its
      // next announcement, which says whether their round is still open.
      if (s.online === false) {
        // Said only when something waits (its retained will greets every start, and its goodbye ends every job).
        this.pendingUpdates().then((pending) => {
          if (pending > 0) this.ctx.log.info({ round: s.round, pending }, 'aggregator offline; pending updates kept');
          else this.ctx.log.debug({ round: s.round }, 'aggregator offline; no update pending');
        }, (err) => this.ctx.log.warn({ err: (err as Error).message }, 'outbox not readable'));
        return;
      }
      this.roundState = { round: s.round, open: s.open, ts: typeof s.ts === 'number' ? s.ts : 0 };
      bus.emit('roundState', { round: s.round, open: s.open, session: typeof s.session === 'number' ? s.session : 0 });
      // Open: pending updates of this round are sent; closed (or a later round): those of closed rounds are dropped.
      this.flushOutbox().catch((err) => this.ctx.log.warn({ err: (err as Error).message }, 'outbox flush failed'));
    });
    bus.on('guardDutyCycle', (d) => {
      this.guardDuty = d;
      this.applyDutyCycle();
    });
    bus.on('configChanged', (_cfg, paths) => {
      if (paths.some((p) => p.startsWith('training.paused'))) this.applyDutyCycle();
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    // Closing the trainer ends a running task early; runTask then abandons it (nothing is sent).
    await this.trainer?.close();
    // An update already in the outbox may be waiting for the broker (an outage): do not wait for it,
    // it stays in the outbox and is sent after the restart if its round is still open.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.queue.catch(() => undefined), new Promise((r) => (timer = setTimeout(r, 2000)))]);
    clearTimeout(timer);
  }

  get paused(): boolean {
    return this.ctx.config().training.paused;
  }

  status(): TrainingStatus {
    return { tasksDone: this.tasksDone, running: this.running, lastRound: this.lastRound, pendingUpdates: this.inFlight.size, dutyCycle: this.dutyCycle(), paused: this.paused };
  }

  private dutyCycle(): number {
    if (this.paused) return 0;
    return this.guardDuty;
  }

  private applyDutyCycle(): void {
    if (!this.trainer) return;
    let d = this.dutyCycle();
    if (this.opts.emulation && this.trainerKey) d = Math.min(d, tierDutyCycle(this.opts.emulation, paramCount(JSON.parse(this.trainerKey) as ModelSpec), this.hostSamplesPerSecond));
    this.trainer.setDutyCycle(d);
  }

  private onTaskFrame(payload: Buffer): void {
    const head = decodeFrame(payload);
    if (!this.firstChunkAt.has(head.transferId)) this.firstChunkAt.set(head.transferId, Date.now());
    const whole = this.reassembler.push('aggregator', payload);
    if (!whole) return;
    const started = this.firstChunkAt.get(head.transferId)!;
    this.firstChunkAt.delete(head.transferId);
    if (head.count > 1) this.ctx.bus.emit('transfer', 'down', whole.wireBytes - payload.length, (Date.now() - started) / 1000);
    if (whole.kind !== FrameKind.Task) throw new Error(`unexpected frame kind ${whole.kind} on the task topic`);
    const task = parseTask(whole.meta);
    if (this.seen.has(task.taskId)) return; // redelivered: run once
    this.seen.add(task.taskId);
    if (whole.payload.byteLength !== task.paramCount * 4) {
      const reason = `task ${task.taskId} carries ${whole.payload.byteLength} model bytes, expected ${task.paramCount * 4}`;
      this.ctx.log.error({ round: task.round, err: reason }, 'task failed');
      void this.reportFailure(task, reason);
      return;
    }
    this.ctx.log.info({ round: task.round, taskId: task.taskId, steps: task.steps, deadlineSeconds: task.deadlineSeconds }, 'task received');
    const params = new Float32Array(task.paramCount);
    new Uint8Array(params.buffer).set(whole.payload);
    const received = Date.now();
    this.queue = this.queue
      .then(() => (this.stopped ? undefined : this.runTask(task, params, received, whole.wireBytes)))
      .catch((err) => {
        const reason = (err as Error)?.message || String(err);
        this.ctx.log.error({ round: task.round, err: reason }, 'task failed');
        // Stopping: the task is abandoned, and the agent's offline state tells the aggregator.
        if (!this.stopped) return this.reportFailure(task, reason);
      });
  }

  /**
   * Tells the aggregator at once that this task failed here (training or encoding threw), with the
   * error: a TaskFailed frame on node/<id>/update, so it records why and closes the round without
   * waiting for this node. Not kept in the outbox: after an outage the round's deadline says it.
   */
  private async reportFailure(task: TaskMessage, reason: string): Promise<void> {
    const meta: TaskFailure = {
      round: task.round, taskId: task.taskId, node: this.ctx.nodeId,
      reason: reason.length > TASK_FAILURE_REASON_MAX ? `${reason.slice(0, TASK_FAILURE_REASON_MAX - 1)}…` : reason,
    };
    try {
      await this.ctx.link.publishFrames(this.ctx.topics.nodeUpdate(this.ctx.nodeId), FrameKind.TaskFailed, meta as unknown as Record<string, unknown>, new Uint8Array(0));
      this.ctx.log.info({ round: task.round, taskId: task.taskId }, 'task failure reported to the aggregator');
    } catch (err) {
      this.ctx.log.warn({ round: task.round, err: (err as Error).message }, 'task failure could not be reported to the aggregator');
    }
  }

  private async runTask(task: TaskMessage, params: Float32Array, receivedAt: number, taskBytes: number): Promise<void> {
    const spec = validateSpec(task.spec);
    const trainer = await this.trainerFor(spec);
    const emu = this.opts.emulation;
    if (emu) await sleep(transferSeconds(emu, taskBytes, 'down'));
    this.running = { round: task.round, taskId: task.taskId, steps: task.steps };
    // The deadline runs from receipt; keep a tenth of it (and the emulated upload) for encoding and upload.
    const uploadReserve = emu ? transferSeconds(emu, params.length * 1.1, 'up') : 0;
    const left = task.deadlineSeconds * 0.9 - uploadReserve - (Date.now() - receivedAt) / 1000;
    let result: TrainResult;
    this.ctx.log.info({ round: task.round, steps: task.steps }, 'training started');
    try {
      result = await trainer.train({ params, steps: task.steps, batchSize: task.batchSize, lr: task.lr, seed: task.seed, deadlineSeconds: Math.max(0.001, left) });
    } finally {
      this.running = undefined;
    }
    if (this.stopped) {
      // Stopping (SIGTERM): the task is abandoned rather than a partial update sent on the way out.
      this.ctx.log.info({ round: task.round, steps: result.steps, of: task.steps }, 'task abandoned: the agent is stopping');
      return;
    }
    if (result.steps === 0) {
      // Paused (host guard or operator) through the whole deadline: there is no work to report.
      this.ctx.log.info({ round: task.round, steps: task.steps }, 'task not done: training was paused until its deadline; nothing sent');
      return;
    }
    if (result.busySeconds > 0) this.ctx.bus.emit('trained', spec.name, result.samples, result.busySeconds);
    const pinned = this.pinnedCodec();
    const codec: CodecOptions = { ...(pinned ?? task.codec), seed: task.seed };
    let delta = new Float32Array(params.length);
    for (let i = 0; i < delta.length; i++) delta[i] = result.params[i] - params[i];
    const sparse = codec.codec === 'topk' || codec.codec === 'topk-int8';
    if (sparse) {
      await this.loadFeedback(delta.length);
      // A residual that reads back fine may still be absurd next to this model (an older file without
      // a checksum, or one gone wrong): it must not poison the update. Dropped, as a corrupt file is.
      const why = this.feedback!.check(params);
      if (why) this.dropFeedback(delta.length, `not a usable error-feedback residual: ${why}`);
      delta = this.feedback!.compensate(delta);
    }
    const encoded = await encodeAsync(delta, codec);
    if (sparse) {
      this.feedback!.commit(delta, encoded);
      if (this.ctx.state) await this.feedback!.save(this.ctx.state.residualFile);
    }
    const meta: UpdateMeta = {
      round: task.round, taskId: task.taskId, node: this.ctx.nodeId, samples: this.opts.data.n, steps: result.steps,
      loss: result.loss, trainSeconds: result.busySeconds > 0 ? result.busySeconds : result.seconds, paramCount: params.length,
      codec: codec.codec, stoppedEarly: result.stoppedEarly,
    };
    const entry = await this.ctx.state?.outbox.put(task.round, task.taskId, meta as unknown as Record<string, unknown>, encoded);
    if (emu) await sleep(transferSeconds(emu, encoded.length, 'up'));
    try {
      await this.send(meta, encoded, entry);
    } catch (err) {
      // The connection to the broker dropped with the update on its way (mqtt.js fails what it has in
      // flight with "Connection closed"): the task is done, and the update is safe in the outbox; the
      // aggregator's state after the reconnect sends it again if its round is still open.
      if (!entry || !this.linkLost(err)) throw err;
      this.tasksDone++;
      this.lastRound = task.round;
      this.ctx.log.warn({ round: task.round, steps: result.steps, loss: result.loss, err: (err as Error).message },
        'update kept in the outbox: the broker connection dropped while it was being sent; it is sent once the broker is back, if its round is still open');
      return;
    }
    this.tasksDone++;
    this.lastRound = task.round;
    this.ctx.log.info({ round: task.round, steps: result.steps, loss: result.loss, seconds: result.seconds, stoppedEarly: result.stoppedEarly }, 'update sent');
  }

  /** A publish that failed because the link went down (not because of what was sent). */
  private linkLost(err: unknown): boolean {
    const message = (err as Error)?.message ?? '';
    return !this.ctx.link.connected || message === 'Connection closed' || message === 'client disconnecting';
  }

  private async send(meta: UpdateMeta, payload: Uint8Array, entry?: OutboxEntry): Promise<void> {
    const key = entry?.id ?? meta.taskId;
    this.inFlight.add(key);
    // The aggregator state this send goes out under: if the aggregator re-announces itself while it
    // is on its way (it reconnected and may have missed it), the send counts as made under the old one.
    const startedUnder = this.roundState?.ts;
    try {
      const t0 = Date.now();
      const bytes = await this.ctx.link.publishFrames(this.ctx.topics.nodeUpdate(this.ctx.nodeId), FrameKind.Update, meta as unknown as Record<string, unknown>, payload);
      this.ctx.bus.emit('transfer', 'up', bytes, (Date.now() - t0) / 1000);
      // Kept until its round closes (see `delivered`); without an aggregator state to go by, it is done.
      if (entry) {
        const state = this.roundState;
        // Its round closed while it was on its way (the closing state found it in flight): done with it.
        if (!state || entry.round < state.round || !state.open) {
          this.delivered.delete(entry.id);
          await this.ctx.state!.outbox.remove(entry.id);
        } else this.delivered.set(entry.id, startedUnder ?? state.ts);
      }
    } finally {
      this.inFlight.delete(key);
    }
    const now = this.roundState;
    if (entry && startedUnder !== undefined && now && now.ts > startedUnder && now.open) {
      // A newer announcement arrived mid-send and skipped this entry as in flight: check again.
      await this.flushOutbox();
    }
  }

  /**
   * On every aggregator state: sends the updates of the open round that it may not have (left over
   * from a broker outage or a restart, or sent before the aggregator announced itself anew), and
   * retires those of closed rounds. A replayed state (same `ts`) sends nothing again.
   */
  private async flushOutbox(): Promise<void> {
    const outbox = this.ctx.state?.outbox;
    const state = this.roundState;
    if (!outbox || !state) return;
    for (const entry of await outbox.list()) {
      if (this.inFlight.has(entry.id)) continue; // mqtt.js still holds it and will deliver it
      const sentUnder = this.delivered.get(entry.id);
      if (entry.round === state.round && state.open) {
        if (sentUnder !== undefined && sentUnder >= state.ts) continue; // the aggregator has not reconnected since
        this.ctx.log.info({ round: entry.round, again: sentUnder !== undefined }, 'sending a pending update from the outbox');
        await this.send(entry.meta as unknown as UpdateMeta, entry.payload, entry);
      } else if (entry.round < state.round || !state.open) {
        // The listing can be stale: a send that just completed, or another flush (a closing state and
        // the next round's, back to back), may have retired this entry meanwhile. Only the one that
        // really removes it speaks, and only an update never sent is "dropped".
        const removed = await outbox.remove(entry.id);
        this.delivered.delete(entry.id);
        if (!removed) continue;
        if (sentUnder !== undefined) this.ctx.log.debug({ round: entry.round }, 'round closed; delivered update retired from the outbox');
        else this.ctx.log.info({ round: entry.round, current: state.round }, 'pending update is for a closed round; dropped');
      }
    }
  }

  /**
   * Outbox entries that still wait for the aggregator: not those that the last aggregator state
   * retires (flushOutbox is removing them: a round before the current one, or none open).
   */
  private async pendingUpdates(): Promise<number> {
    const outbox = this.ctx.state?.outbox;
    if (!outbox) return this.inFlight.size;
    const state = this.roundState;
    const retired = (round: number) => state !== undefined && (round < state.round || !state.open);
    return (await outbox.list()).filter((e) => !retired(e.round)).length;
  }

  private pinnedCodec(): CodecOptions | undefined {
    const c = this.ctx.config().compression;
    if (!c.codec) return undefined;
    return { codec: c.codec, k: c.k, blockSize: c.blockSize, stochastic: c.stochastic };
  }

  private async loadFeedback(length: number): Promise<void> {
    if (this.feedback?.residual.length === length) return;
    const file = this.ctx.state?.residualFile;
    if (file) {
      try {
        this.feedback = await ErrorFeedback.load(file, length);
        return;
      } catch (err) {
        // Truncated, failing its checksum, non-finite, another model's: overwritten at the next save.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.ctx.log.warn({ file, err: (err as Error).message }, 'error-feedback residual not usable; starting from zero');
      }
    }
    this.feedback = new ErrorFeedback(length);
  }

  /** Replaces the residual in use with zeros, saying why (the file, if any, is overwritten at the next save). */
  private dropFeedback(length: number, why: string): void {
    const file = this.ctx.state?.residualFile;
    this.ctx.log.warn({ file, err: `${file ?? 'in-memory residual'}: ${why}` }, 'error-feedback residual not usable; starting from zero');
    this.feedback = new ErrorFeedback(length);
  }

  private async trainerFor(spec: ModelSpec): Promise<Trainer> {
    const key = JSON.stringify(spec);
    if (this.trainer && this.trainerKey === key) return this.trainer;
    await this.trainer?.close();
    const trainer = await Trainer.create(spec, { threads: this.ctx.config().training.threads });
    await trainer.setData(this.opts.data.x, this.opts.data.labels);
    const cal = await calibrateTraining(trainer, { seconds: 0.3 });
    this.hostSamplesPerSecond = cal.samplesPerSecond;
    // Under tier emulation the gateway reports the speed it will really train at.
    const emulated = this.opts.emulation ? tierDutyCycle(this.opts.emulation, paramCount(spec), cal.samplesPerSecond) : 1;
    this.ctx.bus.emit('calibrated', spec.name, cal.samplesPerSecond * emulated);
    this.trainer = trainer;
    this.trainerKey = key;
    this.applyDutyCycle();
    return trainer;
  }
}
