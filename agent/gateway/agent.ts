import { randomBytes } from 'node:crypto';
import { logger, setLogLevel, type Logger } from '../log';
import type { AgentConfig } from '../config';
import type { Shard } from '../data';
import type { StateDir } from '../state';
import { backend as compressBackend } from '../compress';
import { MqttLink, Topics, validateNodeId, type NodeState } from '../transport';
import { GatewayBus, type Feature, type FeatureContext } from './context';
import { TrainingFeature } from './training';
import { ManagementFeature, restoredConfig } from './management';
import { ProfileFeature } from './profile';
import type { TierEmulation } from './emulation';
import { PermanentConfigError, serviceNotifier, type ServiceNotifier } from '../service';

export const VERSION = '0.1.0';

export interface AgentOptions {
  config: AgentConfig;
  nodeId: string;
  /** The gateway's own training data; it never leaves this process. */
  data: Shard;
  /** Node id, applied config, error-feedback residual, outbox. Without one nothing survives a restart. */
  state?: StateDir;
  /** Slow this agent to a device tier (real-time fleet simulation). */
  emulation?: TierEmulation;
  /** How long start() waits for the broker; 0 = for ever (a service). */
  connectTimeoutMs?: number;
  /** Grows on every start of this node (StateDir.nextSession); default: the clock. */
  session?: number;
  /** Run the profile feature (hardware profile and host guard). */
  profile?: boolean;
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  log?: Logger;
}

/**
 * The gateway agent, a thin controller after Zigbee2MQTT: it owns the MQTT link (retained birth
 * state with version and capabilities, last will), the effective configuration and the event bus,
 * and starts the features — training, management (configuration over MQTT, request/response API),
 * profile (profile publishing, host guard). A feature that fails to start is logged and skipped;
 * the agent lives on.
 */
/** host:port of a broker URL, without credentials (systemd's status is readable by every user). */
function brokerHost(url: string): string {
  try {
    return new URL(url).host || url;
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//');
  }
}

/** What an agent evicted by a newer one with its node id says (its error, exit status 78). */
export function duplicateMessage(nodeId: string): string {
  return `node id ${nodeId} is in use by another agent started later; give one of them another node id (node.id / --node-id); not restarting`;
}

export class Agent {
  readonly bus = new GatewayBus();
  private link?: MqttLink;
  private service?: ServiceNotifier;
  private birthSeen = false;
  /** dataShape(), computed once: the data does not change while the agent runs. */
  private shape?: { features?: number; labels?: number };
  private birthCheck?: NodeJS.Timeout;
  private config: AgentConfig;
  private readonly features: Feature[] = [];
  private training?: TrainingFeature;
  private profile?: ProfileFeature;
  private heartbeat?: NodeJS.Timeout;
  private readonly session: number;
  /** Random per process: tells this agent's messages from a twin's with the same node id. */
  private readonly instance = randomBytes(6).toString('hex');
  private readonly log: Logger;
  private left?: () => void;
  private duplicate?: (err: Error) => void;
  /** Set once a newer agent with our node id was seen: we stop once, however many of its states arrive. */
  private evicted = false;
  /** Resolves when the node has left the fleet on request; rejects if another agent took its node id (a PermanentConfigError: exit status 78). */
  readonly leftFleet: Promise<void>;

  constructor(private readonly opts: AgentOptions) {
    validateNodeId(opts.nodeId);
    if (opts.data.n <= 0) throw new Error(`node ${opts.nodeId} has no training data`);
    this.config = opts.config;
    this.session = opts.session ?? Date.now();
    this.log = opts.log ?? logger('agent', { node: opts.nodeId });
    this.leftFleet = new Promise((resolve, reject) => {
      this.left = resolve;
      this.duplicate = reject;
    });
    // Handled here too: a twin can show up while start() is still running, before anyone awaits it.
    this.leftFleet.catch(() => undefined);
  }

  get nodeId(): string {
    return this.opts.nodeId;
  }

  private birth(online: boolean): NodeState {
    const c = this.config.compression;
    return {
      online, node: this.opts.nodeId, session: this.session, version: VERSION, samples: this.opts.data.n, ...this.dataShape(), backend: compressBackend,
      ...(c.codec ? { codec: { codec: c.codec, ...(c.k !== undefined ? { k: c.k } : {}), ...(c.blockSize !== undefined ? { blockSize: c.blockSize } : {}), ...(c.stochastic !== undefined ? { stochastic: c.stochastic } : {}) } } : {}),
      instance: this.instance,
      ts: Date.now(),
    };
  }

  async start(): Promise<void> {
    const restored = await restoredConfig(this.opts.config, this.opts.state);
    if (restored.issues) this.log.error({ issues: restored.issues }, 'stored configuration layers that are invalid now were dropped; starting with the rest');
    this.config = restored.config;
    if (this.config.logging.level !== this.opts.config.logging.level) setLogLevel(this.config.logging.level);
    const cfg = this.config;
    const topics = new Topics(cfg.fleet.prefix, cfg.fleet.name);
    const nodeId = this.opts.nodeId;
    // Under systemd (Type=notify) the agent is ready once its settings and state are in order, not
    // once the broker answers: a gateway that boots with its link down must wait for the broker as
    // a running service (the watchdog fed meanwhile), not be killed at the start timeout in a loop.
    // Sub-parts are tagged `component`: this logger already has `module: 'agent'`, and pino would write a second `module` key into the same JSON line.
    this.service = serviceNotifier({ log: this.log.child({ component: 'service' }) });
    this.service.ready(`node ${nodeId}: connecting to the broker at ${brokerHost(cfg.broker.url)}`);
    this.link = await MqttLink.connect({
      url: cfg.broker.url,
      clientId: cfg.broker.clientId ?? nodeId,
      username: cfg.broker.username,
      password: cfg.broker.password,
      protocolVersion: cfg.broker.protocolVersion,
      maxPacketBytes: cfg.broker.maxPacketBytes,
      tls: this.opts.tls,
      stateTopic: topics.nodeState(nodeId),
      birth: () => this.birth(true) as unknown as Record<string, unknown>,
      // The broker publishes the will when the connection is lost; a clean stop says "shutdown" instead.
      will: { ...this.birth(false), reason: 'connection lost' },
      connectTimeoutMs: this.opts.connectTimeoutMs ?? 0,
      deferBirth: true,
      log: this.log.child({ component: 'transport' }),
    });
    this.link.on('connect', () => this.bus.emit('connected'));
    // Two agents with one node id take each other's MQTT session over and over, and each finds the
    // other's state (its birth or its will) retained when it reconnects. A state of our node id from
    // another instance after a reconnect means a twin; the one started earlier steps back with a
    // clear error. What is retained at our first connection is history (e.g. our own previous run,
    // whose clock may even have been ahead on a gateway without a real-time clock) and is ignored.
    await this.link.subscribe(topics.nodeState(nodeId), (_t, payload, packet) => {
      if (payload.length === 0) return;
      const other = JSON.parse(payload.toString()) as Partial<NodeState> & { instance?: string };
      if (other.instance === this.instance && other.online) this.birthSeen = true;
      if (packet.retain && this.link!.connections <= 1) return;
      if (other.node === nodeId && other.instance !== undefined && other.instance !== this.instance && typeof other.session === 'number' && other.session > this.session && !this.evicted) {
        this.evicted = true;
        // Exit status 78 (EX_CONFIG), which the systemd units list in RestartPreventExitStatus=: restarted,
        // this agent would be the newer one and evict the other in turn, for ever, and neither would train.
        const err = new PermanentConfigError(duplicateMessage(nodeId));
        this.log.fatal({ node: nodeId, otherSession: other.session, mySession: this.session, exitCode: err.exitCode }, err.message);
        // Silently: our offline state would overwrite the other agent's retained birth.
        this.stop({ silent: true }).finally(() => this.duplicate?.(err));
      }
    });
    const ctx: FeatureContext = { nodeId, topics, link: this.link, bus: this.bus, log: this.log, state: this.opts.state, config: () => this.config };
    this.training = new TrainingFeature({ ...ctx, log: this.log.child({ feature: 'training' }) }, { data: this.opts.data, emulation: this.opts.emulation });
    this.features.push(this.training);
    if (this.opts.profile !== false) {
      this.profile = new ProfileFeature({ ...ctx, log: this.log.child({ feature: 'profile' }) });
      this.features.push(this.profile);
    }
    this.features.push(new ManagementFeature({ ...ctx, log: this.log.child({ feature: 'management' }) }, this.opts.config, {
      apply: (next, changed) => this.applyConfig(next, changed),
      status: () => this.status(),
      profile: () => (this.profile?.monitor.profile as unknown as Record<string, unknown>) ?? null,
      leave: () => this.leave(),
    }));
    for (const f of this.features) {
      try {
        await f.start();
      } catch (err) {
        this.log.error({ feature: f.name, err: (err as Error).message }, 'feature failed to start; skipped');
      }
    }
    // Only now, with every subscription in place, does the node say it is online (a task sent before
    // the task subscription existed would be lost).
    this.link.announce();
    // On MQTT 3.1.1 a broker drops a publish its ACL refuses without a word: the one sign is our own
    // birth never coming back on the state topic we also subscribe to.
    this.birthCheck = setTimeout(() => {
      if (this.birthSeen || !this.link?.connected) return;
      const user = cfg.broker.username;
      this.log.error({ node: nodeId, username: user ?? null },
        `this node's state did not come back from the broker within 10 s: the broker seems to refuse its publishes` +
        (user !== undefined && user !== nodeId ? ` (the project ACL lets user "${user}" write only below node/${user}/, and this node is "${nodeId}": use node.id ${user}, or log in as ${nodeId})` : ' (check the broker ACL: the MQTT user name must be the node id)'));
    }, 10_000);
    this.birthCheck.unref();
    const every = 5000;
    this.heartbeat = setInterval(() => this.sendHeartbeat(), every);
    this.bus.on('busyChanged', () => this.sendHeartbeat());
    this.log.info({ samples: this.opts.data.n, compress: compressBackend, stateDir: this.opts.state?.dir }, 'agent started');
    this.service.status(`node ${nodeId} of fleet ${cfg.fleet.name}, ${this.opts.data.n} samples`);
  }

  /** Values per row and labels held (largest + 1), so the aggregator can leave out data its model cannot take. */
  private dataShape(): { features?: number; labels?: number } {
    if (this.shape) return this.shape;
    const { x, labels, n } = this.opts.data;
    if (n === 0) return (this.shape = {});
    let max = 0;
    for (let i = 0; i < labels.length; i++) if (labels[i] > max) max = labels[i];
    return (this.shape = { features: x.length / n, labels: max + 1 });
  }

  /** Busy = paused by the operator or by the host guard: the aggregator leaves a busy node out. */
  get busy(): boolean {
    return this.config.training.paused || (this.profile?.busy ?? false);
  }

  status(): Record<string, unknown> {
    return {
      node: this.opts.nodeId, session: this.session, version: VERSION, connected: this.link?.connected ?? false,
      samples: this.opts.data.n, backend: compressBackend, busy: this.busy, guard: this.profile?.guardState() ?? null,
      training: this.training?.status(), uptimeSeconds: Math.round(process.uptime()),
    };
  }

  private sendHeartbeat(): void {
    if (!this.link?.connected) return;
    const t = new Topics(this.config.fleet.prefix, this.config.fleet.name);
    this.link.publishJson(t.nodeHeartbeat(this.opts.nodeId), { node: this.opts.nodeId, session: this.session, ts: Date.now(), busy: this.busy }, { qos: 0 })
      .catch((err) => this.log.debug({ err: (err as Error).message }, 'heartbeat not sent'));
  }

  private applyConfig(next: AgentConfig, changed: string[]): void {
    this.config = next;
    if (changed.includes('logging.level')) setLogLevel(next.logging.level);
    if (changed.some((p) => p.startsWith('compression'))) {
      const t = new Topics(next.fleet.prefix, next.fleet.name);
      this.link?.publishJson(t.nodeState(this.opts.nodeId), this.birth(true), { retain: true }).catch(() => undefined);
    }
    if (changed.includes('training.paused')) this.sendHeartbeat();
    this.bus.emit('configChanged', next, changed);
  }

  /** Leaves the fleet on request: clears its retained state and profile, then stops. */
  private async leave(): Promise<void> {
    const t = new Topics(this.config.fleet.prefix, this.config.fleet.name);
    await this.link?.publish(t.nodeProfile(this.opts.nodeId), '', { retain: true }).catch(() => undefined);
    await this.stop({ clearState: true });
    this.left?.();
  }

  /** Graceful stop: the running task is abandoned (its update, if written, stays in the outbox), offline is published, logs flushed. */
  async stop(opts: { clearState?: boolean; silent?: boolean } = {}): Promise<void> {
    this.service?.stopping(opts.clearState ? 'leaving the fleet' : 'shutting down');
    clearTimeout(this.birthCheck);
    clearInterval(this.heartbeat);
    for (const f of [...this.features].reverse()) {
      try {
        await f.stop();
      } catch (err) {
        this.log.warn({ feature: f.name, err: (err as Error).message }, 'feature failed to stop cleanly');
      }
    }
    if (opts.clearState && this.link?.connected) {
      const t = new Topics(this.config.fleet.prefix, this.config.fleet.name);
      // A zero-length retained message clears the topic: the node is gone, not just offline.
      await this.link.publish(t.nodeState(this.opts.nodeId), '', { retain: true }).catch(() => undefined);
      await this.link.close();
    } else {
      await this.link?.close({ ...this.birth(false), reason: 'shutdown' });
    }
    await this.opts.state?.close();
  }
}
