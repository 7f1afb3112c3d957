import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { logger, type Logger } from '../log';
import { decode, decodedLength, codecLabel } from '../compress';
import type { ModelSpec } from '../model';
import {
  FrameKind, MqttLink, Reassembler, Topics, parseAggregatorState, parseHeartbeat, parseJson, parseNodeState, parseTaskFailure, parseUpdateMeta,
  type AggregatorState, type FrameMeta, type TaskMessage, type TlsMaterial, type UpdateMeta,
} from '../transport';
import { type ClientUpdate } from './fedavg';
import { checkUpdate, UpdateRejected } from './validate';
import { Fleet, type NodeInfo, type NodeProfileSummary } from './fleet';
import { loadCheckpoint, saveCheckpoint } from './checkpoint';
import type { PlannedTask, RoundFailure, RoundPlan, Strategy } from './strategy';
import { serviceNotifier, type ServiceNotifier } from '../service';

export interface Evaluation {
  loss: number;
  accuracy: number;
}

export interface TaskRecord {
  node: string;
  steps: number;
  score?: number;
  /** Why the node was selected: utility, exploration, fairness. */
  reason?: string;
  /** The codec the node was asked to use (chosen from its link, or pinned). */
  codec?: string;
  expectedSeconds?: number;
  /** Seconds from sending the task to receiving the whole update. */
  actualSeconds?: number;
  stepsDone?: number;
  late: boolean;
}

export interface RoundRecord {
  round: number;
  /** Updates accepted and aggregated. */
  participants: number;
  selected: number;
  /** Test metrics of the global model after the round (when an evaluator is set). */
  accuracy?: number;
  loss?: number;
  /** Sample-weighted mean of the participants' training losses. */
  trainLoss?: number;
  bytesUp: number;
  bytesDown: number;
  seconds: number;
  deadlineSeconds: number;
  aggregated: boolean;
  /** Known nodes not asked this round because they may not train now (busy, offline, hot, low battery), with the reason. */
  skipped: { node: string; reason: string }[];
  /** Late updates of earlier rounds folded into this one (staleness-weighted). */
  stale: number;
  tasks: TaskRecord[];
  failures: RoundFailure[];
}

export interface AggregatorOptions {
  url: string;
  username?: string;
  password?: string;
  maxPacketBytes?: number;
  /** TLS material (an mqtts:// or wss:// URL), MQTT client id and protocol version. */
  tls?: TlsMaterial;
  clientId?: string;
  protocolVersion?: 4 | 5;
  topics: Topics;
  spec: ModelSpec;
  initialParams: Float32Array;
  rounds: number;
  strategy: Strategy;
  /** A round starts only when this many nodes are live (waiting up to waitForClientsSeconds). */
  minClients: number;
  waitForClientsSeconds: number;
  /** Extra seconds past a task's deadline allowed for its upload. */
  graceSeconds?: number;
  /** Keep updates that arrive after their round closed and fold them into the next round. */
  foldLate?: boolean;
  /** How long a selected node may be offline (e.g. across a broker restart) before its task counts as failed. */
  offlineGraceSeconds?: number;
  seed: number;
  evaluate?: (params: Float32Array) => Promise<Evaluation>;
  checkpointFile?: string;
  resume?: boolean;
  /**
   * How long a new aggregator listens for another one running its fleet before its first round
   * (default 3 s; see checkForAnother). A third of it once its own state came back and no other
   * aggregator's online state was retained before it: a running one answers a birth within
   * milliseconds, the rest is for telling a slow one from a stale retained state.
   */
  duplicateCheckSeconds?: number;
  log?: Logger;
}

/**
 * Another aggregator runs this fleet. Exit status 78 (EX_CONFIG): a restart cannot fix it, so a
 * systemd unit lists it in RestartPreventExitStatus.
 */
export class AnotherAggregatorError extends Error {
  override name = 'AnotherAggregatorError';
  readonly exitCode = 78;
  constructor(readonly fleet: string, readonly otherSession: number) {
    super(`another aggregator is running fleet ${fleet} (session ${otherSession}, started ${startedAt(otherSession)}): stop it first, or use another --fleet`);
  }
}

function startedAt(session: number): string {
  const d = new Date(session);
  return Number.isFinite(d.getTime()) ? d.toISOString() : 'at an unknown time';
}

export interface RunResult {
  params: Float32Array;
  rounds: RoundRecord[];
  final?: Evaluation;
}

interface CheckpointState {
  rounds: RoundRecord[];
  spec: ModelSpec;
  [key: string]: unknown;
}

/** What the aggregator knows about the round under way. */
class OpenRound {
  readonly results = new Map<string, { update: ClientUpdate; meta: UpdateMeta; wireBytes: number; seconds: number }>();
  readonly failures = new Map<string, string>();
  readonly sentAt = new Map<string, number>();
  /** The task id sent to each node: an update must carry it (an old job's update, replayed from an outbox, does not). */
  readonly taskIds = new Map<string, string>();
  /** Why frames from a node were refused (too big, corrupt): its failure reason if nothing good follows. */
  readonly refused = new Map<string, string>();
  bytesUp = 0;
  /** Set the moment the round has what it waits for: updates after that are late, even within the same tick. */
  closed = false;
  private settle?: () => void;
  readonly settled: Promise<void>;

  constructor(readonly round: number, readonly plan: RoundPlan, readonly paramCount: number) {
    this.settled = new Promise((resolve) => (this.settle = resolve));
  }

  get selected(): Set<string> {
    return new Set(this.plan.tasks.map((t) => t.node));
  }

  task(node: string): PlannedTask | undefined {
    return this.plan.tasks.find((t) => t.node === node);
  }

  fail(node: string, reason: string): void {
    if (this.closed || !this.task(node) || this.results.has(node) || this.failures.has(node)) return;
    this.failures.set(node, reason);
    this.check();
  }

  check(): void {
    const closeAfter = this.plan.closeAfter ?? this.plan.tasks.length;
    if (this.results.size >= closeAfter || this.results.size + this.failures.size >= this.plan.tasks.length) this.close();
  }

  close(): void {
    this.closed = true;
    this.settle?.();
  }
}

/**
 * Runs the rounds: plan (strategy), send each selected node its task with the global model, collect
 * updates until all are in, enough are in, or the deadline passes, aggregate (strategy), evaluate,
 * checkpoint. A round without results keeps the global model and ends at its deadline.
 */
export class Aggregator extends EventEmitter {
  readonly fleet = new Fleet();
  private link?: MqttLink;
  private readonly log: Logger;
  private readonly reassembler: Reassembler;
  private current?: OpenRound;
  private params: Float32Array;
  private readonly records: RoundRecord[] = [];
  /** The last round closed (its state says so: `round` with `open: false`). */
  private closedRound = 0;
  private stopping = false;
  /** This run's start time (ms): grows on every start; with `instance`, it tells this aggregator from any other. */
  readonly session = Date.now();
  private readonly instance = randomBytes(6).toString('hex');
  /** One aggregator per fleet (see checkForAnother): set once no other one turned up. */
  private established = false;
  private refused?: AnotherAggregatorError;
  /** The last state this aggregator published: answered again, `ts` and all, when another one overwrites it. */
  private lastState?: Record<string, unknown>;
  /** Whether our own state came back from the broker, and whether another one's live state was retained before it. */
  private ownStateSeen = false;
  private suspect?: AggregatorState;
  /** Another aggregator's online state is the latest on the topic: our offline state must not overwrite it. */
  private othersOnTop = false;
  private readonly checkTimers: NodeJS.Timeout[] = [];
  private answerTimer?: NodeJS.Timeout;
  private lastAnswerAt = 0;
  private subscribing = false;
  private claimDone?: () => void;
  /** Resolves when the duplicate check is over: passed, refused, or cut short by a stop. */
  private readonly claimed = new Promise<void>((resolve) => (this.claimDone = resolve));
  private service?: ServiceNotifier;
  private readonly misfitsSaid = new Set<string>();
  /** Who was asked in the last few rounds, to check late updates. */
  private readonly recentRounds = new Map<number, { selected: Set<string>; sentAt: Map<string, number>; batch: Map<string, number> }>();
  private lateUpdates: ClientUpdate[] = [];
  /** `node@round` of every update counted, so a redelivered or late copy is never counted twice. */
  private readonly counted = new Set<string>();

  constructor(private readonly opts: AggregatorOptions) {
    super();
    this.log = opts.log ?? logger('aggregator');
    this.params = opts.initialParams;
    // No honest update is bigger than the float32 model plus its header: a frame claiming more is
    // refused before anything is allocated for it.
    // The largest honest update is top-k with k near 1 (format 2): 4 B of value and at most 1 B of
    // index gap per parameter, plus header and metadata.
    this.reassembler = new Reassembler({ maxPayloadBytes: opts.initialParams.length * 5 + 65_536, timeoutMs: 300_000 });
  }

  get globalParams(): Float32Array {
    return this.params;
  }

  async start(): Promise<void> {
    const t = this.opts.topics;
    this.link = await MqttLink.connect({
      url: this.opts.url,
      // Unique by default: two aggregators with one client id take each other's connection over in
      // turns and never see each other (two containers both have pid 1).
      clientId: this.opts.clientId ?? `fedgate-aggregator-${t.fleet.slice(0, 32)}-${this.instance}`,
      username: this.opts.username,
      password: this.opts.password,
      tls: this.opts.tls,
      protocolVersion: this.opts.protocolVersion,
      maxPacketBytes: this.opts.maxPacketBytes,
      stateTopic: t.aggregatorState,
      birth: () => (this.lastState = this.stateMessage(true)),
      will: this.stateMessage(false),
      // The birth goes out once we listen to aggregator/state: what is retained there before it is history.
      deferBirth: true,
      log: this.log.child({ component: 'transport' }),
    });
    // Refused while subscribing (a running aggregator's state came in): the link closes once the
    // subscriptions are through, and the birth never goes out.
    this.subscribing = true;
    try {
      await this.subscribeAll(t);
    } catch (err) {
      if (!this.refused) throw err;
    } finally {
      this.subscribing = false;
    }
    if (this.refused) {
      await this.link.close();
      throw this.refused;
    }
    this.link.announce();
    this.checkForAnother();
  }

  private async subscribeAll(t: Topics): Promise<void> {
    const link = this.link!;
    await link.subscribe(t.aggregatorState, (_topic, payload, packet) => this.onAggregatorState(payload, packet.retain));
    // A last will is not a verdict: a broker restart sends every node's will, and the node comes
    // back and delivers. A node that stays offline for the grace period has failed its task.
    this.fleet.on('offline', (id: string) => {
      const open = this.current;
      if (!open?.task(id)) return;
      const timer = setTimeout(() => {
        if (this.current === open && !this.fleet.get(id)?.online) open.fail(id, 'went offline during the round');
      }, (this.opts.offlineGraceSeconds ?? 15) * 1000);
      timer.unref();
    });
    await link.subscribe(t.allNodes('state'), (topic, payload, packet) => {
      if (payload.length === 0) return; // a cleared retained state
      const id = t.parseNodeTopic(topic)?.id;
      const s = parseNodeState(parseJson(payload, 'node state'));
      if (s.node !== id) throw new Error(`state on ${topic} names node ${s.node}`);
      // A retained state is history: the node counts as live only once it is heard from (a heartbeat),
      // so a stale retained "online" cannot conjure up a phantom node.
      this.fleet.onState(s, { retained: packet.retain });
    });
    await link.subscribe(t.allNodes('heartbeat'), (topic, payload) => {
      const hb = parseHeartbeat(parseJson(payload, 'heartbeat'));
      if (hb.node === t.parseNodeTopic(topic)?.id) this.fleet.onHeartbeat(hb);
    }, 0);
    await link.subscribe(t.allNodes('update'), (topic, payload) => this.onUpdateFrame(topic, payload));
    await link.subscribe(t.allNodes('profile'), (topic, payload) => {
      const id = t.parseNodeTopic(topic)?.id;
      if (!id || payload.length === 0) return;
      this.fleet.onProfile(id, summarizeProfile(parseJson(payload, 'profile')));
    });
  }

  async run(): Promise<RunResult> {
    if (!this.link) await this.start();
    if (this.refused) throw this.refused;
    let first = 1;
    if (this.opts.resume && this.opts.checkpointFile) {
      const ckpt = await loadCheckpoint<CheckpointState>(this.opts.checkpointFile);
      const shape = (spec: ModelSpec | undefined) => (spec ? [spec.inputSize, ...spec.layers.map((l) => l.units)].join('-') : undefined);
      const theirs = shape(ckpt.state.spec);
      if (ckpt.params.length !== this.params.length || (theirs !== undefined && theirs !== shape(this.opts.spec))) {
        throw new Error(`checkpoint ${this.opts.checkpointFile} holds a ${theirs ?? 'other'} model (${ckpt.params.length} params), this job's is ${shape(this.opts.spec)} (${this.params.length} params): ` +
          'resume with the --dataset and --hidden it was made with, or --fresh to start over');
      }
      this.params = ckpt.params;
      this.records.push(...(ckpt.state.rounds ?? []));
      first = ckpt.round + 1;
      this.log.info({ round: ckpt.round }, 'resumed from checkpoint');
    }
    this.service ??= serviceNotifier({ log: this.log.child({ component: 'service' }) });
    this.service.ready(`aggregator of fleet ${this.opts.topics.fleet}, from round ${first} of ${this.opts.rounds}`);
    for (let round = first; round <= this.opts.rounds && !this.stopping; round++) {
      this.service.status(`round ${round} of ${this.opts.rounds}`);
      const before = this.params;
      await this.waitForClients();
      await this.claimed; // no round before the fleet is known to be ours (at once after the first)
      if (this.stopping) break;
      const record = await this.runRound(round);
      if (this.stopping) {
        // Cut short by a shutdown: not a round. The model and the checkpoint stay as the last
        // whole round left them, and a resumed job runs this round again.
        this.params = before;
        this.log.info({ round, results: record.participants }, 'round cut short by the shutdown: discarded (a resumed job runs it again)');
        break;
      }
      this.records.push(record);
      if (this.opts.checkpointFile) {
        await saveCheckpoint(this.opts.checkpointFile, { round, params: this.params, state: { rounds: this.records, spec: this.opts.spec } });
      }
      this.emit('round', record);
    }
    if (this.refused) throw this.refused;
    const last = this.records[this.records.length - 1];
    const final = last?.accuracy !== undefined ? { accuracy: last.accuracy, loss: last.loss ?? NaN } : undefined;
    return { params: this.params, rounds: [...this.records], final };
  }

  async stop(): Promise<void> {
    this.service?.stopping();
    this.halt('aggregator stopping');
    // Our offline state, unless we are a newcomer stopped while it checks and another aggregator's
    // state is (or was, before our birth) the latest there: ours must not overwrite a running one's.
    const quietly = this.refused !== undefined || (!this.established && (this.othersOnTop || this.suspect !== undefined));
    await this.link?.close(quietly ? undefined : this.stateMessage(false));
  }

  private halt(reason: string): void {
    this.stopping = true;
    this.checkTimers.forEach(clearTimeout);
    clearTimeout(this.answerTimer);
    this.claimDone?.();
    this.current?.plan.tasks.forEach((t) => this.current?.fail(t.node, reason));
  }

  /**
   * Retained on aggregator/state: nodes read `round` and `open` to tell whether a pending update is
   * still wanted. While it checks for another aggregator (`starting`), an online state carries
   * neither, so gateways ignore a newcomer that is about to refuse.
   */
  private stateMessage(online: boolean): Record<string, unknown> {
    const id = { online, role: 'aggregator', session: this.session, instance: this.instance };
    if (online && !this.established) return { ...id, starting: true, ts: Date.now() };
    return { ...id, round: this.current?.round ?? Math.max(this.closedRound, this.records.length), open: online && this.current !== undefined, ts: Date.now() };
  }

  private publishState(): void {
    // Once stopping, the link is closing and publishes the final (offline) state itself.
    if (this.stopping) return;
    this.publishRetained(this.lastState = this.stateMessage(true));
  }

  private publishRetained(state: Record<string, unknown>): void {
    this.link?.publishJson(this.opts.topics.aggregatorState, state, { retain: true })
      .catch((err) => this.log.warn({ err: (err as Error).message }, 'aggregator state not published'));
  }

  /**
   * One aggregator per fleet. Every aggregator listens to its fleet's aggregator/state and answers
   * another one's state (its birth, or a newcomer's offline state that overwrote ours) with its own,
   * so the retained state stays the running one's and the newcomer hears of it. A newcomer runs no
   * round for `duplicateCheckSeconds` after its birth: a live state (not a retained copy: that may
   * be the history of an aggregator that died with the broker down) of one that outranks it makes
   * it refuse. A running aggregator outranks a starting one, then the earlier session wins (two
   * started at once; also two running after the broker kept them apart).
   */
  private checkForAnother(): void {
    const full = (this.opts.duplicateCheckSeconds ?? 3) * 1000;
    const quiet = setTimeout(() => {
      if (this.ownStateSeen && !this.suspect) this.establish();
    }, full / 3);
    this.checkTimers.push(quiet, setTimeout(() => this.establish(), full));
  }

  private establish(): void {
    if (this.established || this.stopping) return;
    this.established = true;
    this.checkTimers.forEach(clearTimeout);
    if (!this.ownStateSeen) {
      this.log.warn({ topic: this.opts.topics.aggregatorState }, 'this aggregator\'s state did not come back from the broker: gateways and other aggregators may not see it (check the broker ACL: the aggregator must read and write its fleet\'s aggregator/state)');
    }
    if (this.suspect) this.log.info({ session: this.suspect.session }, 'the retained state of another aggregator was not confirmed: taken for the history of one that is gone');
    this.publishState(); // now with round and open, for the gateways
    this.claimDone?.();
  }

  private onAggregatorState(payload: Buffer, retained: boolean): void {
    let s: AggregatorState | undefined;
    try {
      if (payload.length > 0) s = parseAggregatorState(parseJson(payload, 'aggregator state'));
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'aggregator state not understood');
    }
    if (s && s.session === this.session && s.instance === this.instance) {
      this.ownStateSeen = true;
      this.othersOnTop = false;
      return;
    }
    this.othersOnTop = s?.online === true;
    if (this.stopping) return;
    if (s?.online && !retained && this.outranks(s)) return this.refuse(s);
    if (retained && !this.established) {
      // History, retained before our birth (which follows it, so it needs no answer): a running
      // aggregator, or one gone without its last will (the broker was down). A live one answers
      // our birth; until the check is over, no round.
      if (s?.online && this.outranks(s)) this.suspect ??= s;
      return;
    }
    // Anything else another one wrote there (its birth or offline state, a cleared topic): say we
    // are here, and keep the retained state ours.
    this.answer();
  }

  /** Lower wins: a running aggregator before a starting one, then the earlier session, then the instance id. */
  private outranks(s: AggregatorState): boolean {
    const theirs: [number, number, string] = [s.starting === true ? 1 : 0, s.session, s.instance ?? ''];
    const ours: [number, number, string] = [this.established ? 0 : 1, this.session, this.instance];
    for (let i = 0; i < 3; i++) if (theirs[i] !== ours[i]) return theirs[i] < ours[i];
    return false;
  }

  /** Publishes our last state again, `ts` and all (gateways take it for a replay and send nothing twice); at most 4 times a second. */
  private answer(): void {
    if (this.answerTimer || this.stopping) return;
    this.answerTimer = setTimeout(() => {
      this.answerTimer = undefined;
      this.lastAnswerAt = Date.now();
      if (this.stopping || !this.link?.connected) return;
      this.publishRetained(this.lastState ?? (this.lastState = this.stateMessage(true)));
    }, Math.max(0, this.lastAnswerAt + 250 - Date.now()));
  }

  /** Another aggregator runs this fleet: stop at once, without a word on aggregator/state (ours would overwrite its state; a clean disconnect sends no will). */
  private refuse(s: AggregatorState): void {
    if (this.refused) return;
    this.refused = new AnotherAggregatorError(this.opts.topics.fleet, s.session);
    this.log.info({ otherSession: s.session, otherInstance: s.instance, otherStarting: s.starting === true, session: this.session, established: this.established }, 'another aggregator runs this fleet; stopping this one');
    this.halt('another aggregator runs this fleet');
    if (!this.subscribing) this.link?.close().catch(() => undefined); // else start() closes it
  }

  private async waitForClients(): Promise<void> {
    const deadline = Date.now() + this.opts.waitForClientsSeconds * 1000;
    while (this.fittingLive().length < this.opts.minClients && !this.stopping) {
      if (Date.now() > deadline) {
        const live = this.fleet.live();
        const fitting = this.fittingLive().length;
        this.log.warn({ live: live.length, fitting, want: this.opts.minClients },
          fitting < live.length ? `not enough nodes online whose data fits this job's model (${live.length - fitting} of the ${live.length} live do not, or hold no data); running the round with those there are`
            : 'not enough nodes online; running the round with those there are');
        return;
      }
      await sleep(100);
    }
  }

  private async runRound(round: number): Promise<RoundRecord> {
    const started = Date.now();
    const fitting: NodeInfo[] = [];
    const misfits: { node: string; reason: string }[] = [];
    for (const n of this.fleet.live()) {
      const reason = this.misfit(n);
      if (reason) misfits.push({ node: n.id, reason });
      else fitting.push(n);
    }
    const plan = this.opts.strategy.plan(round, fitting);
    // Not asked: misfits, and the known nodes not live when the round was planned. A node asked and
    // gone during the round is late (its failure says why), not skipped.
    plan.skipped = [...(plan.skipped ?? []), ...misfits, ...this.notLive()];
    const open = new OpenRound(round, plan, this.params.length);
    this.current = open;
    this.recentRounds.set(round, { selected: open.selected, sentAt: open.sentAt, batch: new Map(plan.tasks.map((t) => [t.node, t.batchSize])) });
    this.recentRounds.delete(round - 4);
    this.publishState();
    let bytesDown = 0;
    const model = Buffer.from(this.params.buffer, this.params.byteOffset, this.params.byteLength);
    for (const task of plan.tasks) {
      const msg: TaskMessage = {
        round,
        taskId: `${this.session}-${round}-${task.node}`,
        spec: this.opts.spec as unknown as Record<string, unknown>,
        steps: task.steps,
        batchSize: task.batchSize,
        lr: task.lr,
        deadlineSeconds: plan.deadlineSeconds,
        codec: task.codec,
        seed: (this.opts.seed * 7919 + round * 104729 + hash(task.node)) >>> 0,
        paramCount: this.params.length,
      };
      open.sentAt.set(task.node, Date.now());
      open.taskIds.set(task.node, msg.taskId);
      try {
        bytesDown += await this.link!.publishFrames(this.opts.topics.nodeTask(task.node), FrameKind.Task, msg as unknown as Record<string, unknown>, model);
      } catch (err) {
        open.fail(task.node, `task could not be sent: ${(err as Error).message}`);
      }
    }
    open.check();
    // Tasks run for their deadline from receipt; the round allows a grace on top for delivery and
    // upload: a quarter of the deadline, between 2 and 10 seconds, unless set.
    const grace = this.opts.graceSeconds ?? Math.min(10, Math.max(2, plan.deadlineSeconds / 4));
    const waitMs = (plan.deadlineSeconds + grace) * 1000;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([open.settled, new Promise<void>((r) => (timer = setTimeout(r, waitMs)))]);
    clearTimeout(timer);
    open.closed = true;
    this.current = undefined;
    this.closedRound = round;
    this.publishState();
    for (const t of plan.tasks) {
      if (open.results.has(t.node) || open.failures.has(t.node)) continue;
      const refused = open.refused.get(t.node);
      open.failures.set(t.node, open.results.size >= (plan.closeAfter ?? plan.tasks.length) ? 'round closed at K results before its update'
        : refused ? `update refused: ${refused}` : this.fleet.get(t.node)?.online === false ? 'went offline during the round' : 'no update before the deadline');
    }
    const closedAt = Date.now();
    const failures = [...open.failures].map(([node, reason]) => ({ node, reason, elapsedSeconds: (closedAt - (open.sentAt.get(node) ?? closedAt)) / 1000 }));

    const results = [...open.results.values()];
    const stale = this.lateUpdates.filter((u) => u.round < round);
    this.lateUpdates = [];
    let aggregated = false;
    try {
      const next = this.opts.strategy.aggregate(round, this.params, [...results.map((r) => r.update), ...stale], failures);
      if (next) {
        this.params = next;
        aggregated = true;
      }
    } catch (err) {
      this.log.error({ round, err: (err as Error).message }, 'aggregation failed; keeping the global model');
    }
    const evaluation = this.opts.evaluate ? await this.opts.evaluate(this.params) : undefined;
    const totalSamples = results.reduce((s, r) => s + r.update.samples, 0);
    return {
      round,
      participants: results.length,
      selected: plan.tasks.length,
      accuracy: evaluation?.accuracy,
      loss: evaluation?.loss,
      trainLoss: totalSamples > 0 ? results.reduce((s, r) => s + r.update.loss * r.update.samples, 0) / totalSamples : undefined,
      bytesUp: open.bytesUp,
      bytesDown,
      seconds: (Date.now() - started) / 1000,
      deadlineSeconds: plan.deadlineSeconds,
      aggregated,
      skipped: plan.skipped ?? [],
      stale: stale.length,
      tasks: plan.tasks.map((t) => {
        const r = open.results.get(t.node);
        return { node: t.node, steps: t.steps, score: t.score, reason: t.reason, codec: codecLabel(t.codec), expectedSeconds: t.expectedSeconds, actualSeconds: r?.seconds, stepsDone: r?.update.steps, late: !r };
      }),
      failures,
    };
  }

  /**
   * Why a node's data cannot train this job's model (another data set or feature count, labels
   * beyond its classes), or undefined. Said once per node at warn: it is a configuration mistake,
   * and every task sent there would fail.
   */
  private misfit(n: NodeInfo): string | undefined {
    const spec = this.opts.spec;
    const classes = spec.layers[spec.layers.length - 1].units;
    let reason: string | undefined;
    if (n.features !== undefined && n.features !== spec.inputSize) reason = `its data has ${n.features} values a row; the model takes ${spec.inputSize}`;
    else if (n.labels !== undefined && n.labels > classes) reason = `its labels go up to ${n.labels - 1}; the model has ${classes} classes`;
    if (reason && !this.misfitsSaid.has(n.id)) {
      this.misfitsSaid.add(n.id);
      this.log.warn({ node: n.id, reason }, 'node left out: its data does not fit this job\'s model');
    }
    return reason;
  }

  /** Live nodes whose data fits this job's model: the ones that count towards minClients. */
  private fittingLive(): NodeInfo[] {
    return this.fleet.live().filter((n) => n.samples > 0 && !this.misfit(n));
  }

  /** Nodes the fleet knows that were not offered to the strategy: offline, or silent for too long. */
  private notLive(): { node: string; reason: string }[] {
    return this.fleet.all().filter((n) => !this.fleet.isLive(n)).map((n) => ({ node: n.id, reason: n.online ? 'no heartbeat lately' : 'offline' }));
  }

  private onUpdateFrame(topic: string, payload: Buffer): void {
    const node = this.opts.topics.parseNodeTopic(topic)?.id;
    if (!node) return;
    const open = this.current;
    if (open) open.bytesUp += payload.length;
    let whole: ReturnType<Reassembler['push']>;
    try {
      whole = this.reassembler.push(node, payload);
    } catch (err) {
      // Refused before any of it is kept. Not a verdict yet (anyone able to publish there could
      // send garbage, and a good copy may follow), but if nothing good comes, this is the reason the
      // report gives, rather than "no update before the deadline".
      const why = (err as Error).message;
      if (open?.task(node) && !open.refused.has(node)) this.log.warn({ node, round: open.round, err: why }, 'update frames refused');
      open?.refused.set(node, why);
      return;
    }
    if (!whole) return;
    if (whole.kind === FrameKind.TaskFailed) return this.onTaskFailure(node, topic, whole.meta);
    if (whole.kind !== FrameKind.Update) throw new Error(`frame of kind ${whole.kind} on ${topic}`);
    const meta = parseUpdateMeta(whole.meta);
    if (meta.node !== node) throw new UpdateRejected(`update on ${topic} claims to come from ${meta.node}`);
    if (!open || meta.round !== open.round || open.closed) {
      this.onLateUpdate(node, meta, whole.payload);
      return;
    }
    if (open.taskIds.get(node) !== meta.taskId) {
      this.log.warn({ node, round: meta.round, taskId: meta.taskId }, 'update for a task this aggregator did not send (an earlier job?); dropped');
      return;
    }
    if (open.results.has(node)) return; // redelivered: counts once
    try {
      const update = this.toUpdate(node, meta, whole.payload, open.round, open.selected, open.sentAt, open.task(node)?.batchSize);
      open.results.set(node, { update, meta, wireBytes: whole.wireBytes, seconds: update.elapsedSeconds ?? 0 });
      this.counted.add(`${node}@${meta.round}`);
      open.check();
    } catch (err) {
      this.log.warn({ node, round: meta.round, err: (err as Error).message }, 'update rejected');
      open.fail(node, `update rejected: ${(err as Error).message}`);
    }
  }

  /**
   * A node says its task failed (training or encoding threw on the gateway): its failure is recorded
   * with the node's reason at once, and the round closes without waiting for it if nothing else is
   * awaited. Only for the task this aggregator sent it in the open round.
   */
  private onTaskFailure(node: string, topic: string, raw: FrameMeta): void {
    const f = parseTaskFailure(raw);
    if (f.node !== node) throw new UpdateRejected(`task failure on ${topic} claims to come from ${f.node}`);
    const open = this.current;
    if (!open || f.round !== open.round || open.closed) {
      this.log.info({ node, round: f.round, current: open?.round, reason: f.reason }, 'task failure for a closed round ignored');
      return;
    }
    if (open.taskIds.get(node) !== f.taskId) {
      this.log.warn({ node, round: f.round, taskId: f.taskId }, 'task failure for a task this aggregator did not send (an earlier job?); ignored');
      return;
    }
    if (open.results.has(node)) return; // its update is in: that counts
    this.log.warn({ node, round: f.round, reason: f.reason }, 'task failed on the gateway');
    open.fail(node, `failed on the gateway: ${f.reason}`);
  }

  /** Decodes and checks an update whole; its announced length is checked before decoding, so a forged header cannot make us allocate. */
  private toUpdate(node: string, meta: UpdateMeta, payload: Uint8Array, round: number, selected: Set<string>, sentAt: Map<string, number>, batchSize?: number): ClientUpdate {
    const n = decodedLength(payload);
    if (n !== this.params.length) throw new UpdateRejected(`update from ${node} announces ${n} values, the model has ${this.params.length}`);
    const delta = decode(payload);
    const elapsedSeconds = (Date.now() - (sentAt.get(node) ?? Date.now())) / 1000;
    return checkUpdate(
      { node, round: meta.round, samples: meta.samples, steps: meta.steps, delta, loss: meta.loss, trainSeconds: meta.trainSeconds, elapsedSeconds, batchSize },
      { round, paramCount: this.params.length, selected },
    );
  }

  /** An update for a round that has closed: folded into the next round when enabled, never counted twice. */
  private onLateUpdate(node: string, meta: UpdateMeta, payload: Uint8Array): void {
    const past = this.recentRounds.get(meta.round);
    if (!this.opts.foldLate || !past || this.counted.has(`${node}@${meta.round}`)) {
      this.log.info({ node, round: meta.round, current: this.current?.round }, 'late update dropped');
      return;
    }
    if (this.lateUpdates.some((u) => u.node === node && u.round === meta.round)) return;
    try {
      this.lateUpdates.push(this.toUpdate(node, meta, payload, meta.round, past.selected, past.sentAt, past.batch.get(node)));
      this.counted.add(`${node}@${meta.round}`);
      this.log.info({ node, round: meta.round }, 'late update kept for the next round');
    } catch (err) {
      this.log.warn({ node, round: meta.round, err: (err as Error).message }, 'late update rejected');
    }
  }
}

/** The planner's view of a published profile; anything missing or malformed is unknown (null). */
export function summarizeProfile(raw: unknown): NodeProfileSummary {
  const p = (raw ?? {}) as Record<string, any>;
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  return {
    trainSamplesPerSecond: num(p.trainSamplesPerSecond),
    upBytesPerSecond: num(p.link?.upBytesPerSecond),
    downBytesPerSecond: num(p.link?.downBytesPerSecond),
    cpuLoad: num(p.load?.other),
    temperatureC: num(p.temperatureC),
    batteryPercent: num(p.battery?.percent),
    // A box without a battery reports onAc true; only a present battery not on mains counts.
    onBattery: p.battery?.present === false ? false : typeof p.battery?.onAc === 'boolean' ? !p.battery.onAc : null,
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}
