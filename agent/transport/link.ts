import { EventEmitter } from 'node:events';
import mqtt, { type IClientOptions, type MqttClient, type IPublishPacket } from 'mqtt';
import type { Logger } from '../log';
import { logger } from '../log';
import { assertPublishTopic } from './topics';
import { encodeFrames, type FrameKind, type FrameMeta } from './frame';
import { permanentTlsFailure } from './tls';

export const DEFAULT_MAX_PACKET_BYTES = 128 * 1024;

export interface LinkOptions {
  url: string;
  clientId: string;
  username?: string;
  password?: string;
  /** Retained state topic: `birth()` is published there on every (re)connect, `will` is the last will. */
  stateTopic: string;
  birth: () => Record<string, unknown>;
  will: Record<string, unknown>;
  /** Hold the first birth until `announce()`: a node must not look ready before it has subscribed to its tasks. */
  deferBirth?: boolean;
  /** Largest MQTT packet this side will send; bigger payloads must be chunked (see publishFrames). */
  maxPacketBytes?: number;
  protocolVersion?: 4 | 5;
  /** How long `connect` waits for the first connection; 0 waits for ever (a service started before its broker). */
  connectTimeoutMs?: number;
  /** Reconnect backoff: first delay, cap, and how long a connection must last before the delay resets. */
  backoff?: Partial<BackoffOptions>;
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer; rejectUnauthorized?: boolean };
  keepaliveSeconds?: number;
  log?: Logger;
}

export interface PublishOptions {
  retain?: boolean;
  qos?: 0 | 1;
  /** MQTT v5 correlation data (request/response), passed through untouched. */
  correlationData?: Buffer;
}

export type MessageHandler = (topic: string, payload: Buffer, packet: IPublishPacket) => void;

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  stableMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 60_000, stableMs: 30_000 };

/**
 * Delay before reconnect attempt `attempt` (0-based): exponential, capped, with jitter over the
 * upper half so a fleet that lost its broker together does not come back in lock-step.
 */
export function backoffDelay(attempt: number, o: Pick<BackoffOptions, 'initialMs' | 'maxMs'> = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const ceiling = Math.min(o.maxMs, o.initialMs * Math.pow(2, Math.min(attempt, 30)));
  return Math.round(ceiling * (0.5 + 0.5 * random()));
}

/** MQTT packet size of a PUBLISH: fixed header (1 + up to 4 length bytes), topic (2 + n), packet id for QoS > 0, payload. */
export function publishPacketBytes(topic: string, payloadBytes: number, qos: 0 | 1 | 2): number {
  const remaining = 2 + Buffer.byteLength(topic) + (qos > 0 ? 2 : 0) + payloadBytes;
  const lengthBytes = remaining < 128 ? 1 : remaining < 16384 ? 2 : remaining < 2097152 ? 3 : 4;
  return 1 + lengthBytes + remaining;
}

/** True if `topic` matches the subscription `filter` (MQTT-4.7.1 wildcards `+` and `#`). */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return i > 0 || !topic.startsWith('$'); // MQTT-4.7.2-1: wildcards at the root never match $-topics
    if (i >= t.length) return false;
    if (f[i] === '+') {
      if (i === 0 && t[0].startsWith('$')) return false;
      continue;
    }
    if (f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/**
 * One MQTT connection with fleet conventions: a retained birth state on every (re)connect, a
 * retained last will, no publishing to wildcard topics, a size limit enforced on the sending side
 * (a broker drops the connection over an oversized publish, and mqtt.js never reports it), and
 * handlers dispatched by subscription filter.
 */
export class MqttLink extends EventEmitter {
  readonly maxPacketBytes: number;
  bytesOut = 0;
  bytesIn = 0;
  private readonly handlers: { filter: string; handler: MessageHandler }[] = [];
  /** Every subscription made, with its QoS: made again after a reconnect the broker kept no session for. */
  private readonly subscriptions = new Map<string, 0 | 1>();
  private readonly log: Logger;
  private closed = false;
  private attempts = 0;
  private connectedAt = 0;
  private retryTimer?: NodeJS.Timeout;
  private watchdog?: NodeJS.Timeout;
  private lastAttemptAt = Date.now();
  private readonly backoff: BackoffOptions;
  /** Connections made so far (1 after the first). */
  connections = 0;

  private constructor(private readonly client: MqttClient, private readonly opts: LinkOptions) {
    super();
    this.maxPacketBytes = opts.maxPacketBytes ?? DEFAULT_MAX_PACKET_BYTES;
    this.log = opts.log ?? logger('transport', { clientId: opts.clientId });
    this.backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    this.announced = !opts.deferBirth;
    client.on('message', (topic, payload, packet) => this.dispatch(topic, payload, packet));
    // mqtt.js reconnects at a fixed period; we reconnect ourselves with exponential backoff and jitter,
    // reset only after a connection that lasted `stableMs`.
    client.on('close', () => {
      if (this.closed) return;
      if (this.connectedAt && Date.now() - this.connectedAt >= this.backoff.stableMs) this.attempts = 0;
      this.connectedAt = 0;
      if (this.retryTimer) return;
      const delay = backoffDelay(this.attempts++, this.backoff);
      this.log.info({ delayMs: delay, attempt: this.attempts }, 'connection lost; reconnecting');
      this.emit('offline');
      this.retryTimer = setTimeout(() => this.attempt(), delay);
    });
    // Insurance: should a failed attempt ever end without a 'close' event, try again anyway.
    this.watchdog = setInterval(() => {
      if (!this.closed && !this.client.connected && !this.retryTimer && Date.now() - this.lastAttemptAt > this.backoff.maxMs / 2 + 10_000) {
        this.log.warn('no reconnect attempt in a while; trying again');
        this.attempt();
      }
    }, 5000);
    this.watchdog.unref();
    client.on('connect', (connack) => {
      this.connectedAt = Date.now();
      this.connections++;
      this.log.info({ url: opts.url, sessionPresent: connack.sessionPresent }, 'connected');
      // mqtt.js only remembers subscriptions to renew when it reconnects by itself (reconnectPeriod > 0);
      // with our own backoff it renews none, so a broker that lost the session would leave us deaf.
      if (this.connections > 1 && !connack.sessionPresent) this.resubscribe();
      if (this.announced) this.publishBirth();
      this.emit('connect');
    });
    client.on('error', (err) => {
      // While closing, errors are teardown noise: a message that arrives after DISCONNECT was
      // written still gets its PUBACK written by mqtt.js (ERR_STREAM_WRITE_AFTER_END), and some
      // brokers (mosquitto) reset the connection for it (ECONNRESET).
      if (this.closed) this.log.debug({ err: err.message }, 'mqtt error while closing');
      else this.log.warn({ err: err.message }, 'mqtt error');
    });
  }

  private announced: boolean;

  private publishBirth(): void {
    this.publishJson(this.opts.stateTopic, this.opts.birth(), { retain: true, qos: 1 }).catch((err) => this.log.warn({ err }, 'could not publish birth state'));
  }

  /** Publishes the birth state now (and on every reconnect from now on); see `deferBirth`. */
  announce(): void {
    if (this.announced) return;
    this.announced = true;
    if (this.client.connected) this.publishBirth();
  }

  private attempt(): void {
    this.retryTimer = undefined;
    this.lastAttemptAt = Date.now();
    if (!this.closed && !this.client.connected) this.client.connect();
  }

  /** Connects and resolves once the broker accepted us; rejects with a clear message otherwise. */
  static connect(opts: LinkOptions): Promise<MqttLink> {
    const options: IClientOptions = {
      clientId: opts.clientId,
      username: opts.username,
      password: opts.password,
      protocolVersion: opts.protocolVersion ?? 4,
      keepalive: opts.keepaliveSeconds ?? 30,
      connectTimeout: 10_000,
      reconnectPeriod: 0, // see the 'close' handler: our own backoff
      clean: true,
      // Re-subscribing after a reconnect is done by MqttLink (see resubscribe): mqtt.js does it only with its own reconnect timer.
      resubscribe: false,
      ca: opts.tls?.ca,
      cert: opts.tls?.cert,
      key: opts.tls?.key,
      rejectUnauthorized: opts.tls?.rejectUnauthorized,
      will: { topic: opts.stateTopic, payload: Buffer.from(JSON.stringify(opts.will)), qos: 1, retain: true },
    };
    const client = mqtt.connect(opts.url, options);
    const link = new MqttLink(client, opts);
    const waitMs = opts.connectTimeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const timer = waitMs > 0 ? setTimeout(() => fail(new Error(`could not connect to the MQTT broker at ${opts.url} within ${waitMs} ms`)), waitMs) : undefined;
      const fail = (err: Error) => {
        clearTimeout(timer);
        client.removeListener('connect', ok);
        link.closed = true;
        clearTimeout(link.retryTimer);
        clearInterval(link.watchdog);
        client.end(true);
        reject(err);
      };
      const ok = () => {
        clearTimeout(timer);
        client.removeListener('error', onError);
        resolve(link);
      };
      const onError = (err: Error & { code?: unknown }) => {
        // A refused CONNECT (bad credentials, not authorised) will not get better by retrying,
        // nor will a broker certificate that does not verify.
        if (typeof err.code === 'number' && err.code !== 0) fail(new Error(`the MQTT broker at ${opts.url} refused the connection: ${err.message}`));
        const tls = permanentTlsFailure(err, opts.url);
        if (tls) fail(new Error(tls));
      };
      client.once('connect', ok);
      client.on('error', onError);
    });
  }

  get connected(): boolean {
    return this.client.connected;
  }

  async subscribe(filter: string, handler: MessageHandler, qos: 0 | 1 = 1): Promise<void> {
    this.handlers.push({ filter, handler });
    this.subscriptions.set(filter, Math.max(qos, this.subscriptions.get(filter) ?? 0) as 0 | 1);
    await this.client.subscribeAsync(filter, { qos });
  }

  /** Subscribes again to everything (the broker kept no session): retained messages are delivered again, so handlers must be idempotent. */
  private resubscribe(): void {
    if (this.subscriptions.size === 0) return;
    const filters = Object.fromEntries([...this.subscriptions].map(([filter, qos]) => [filter, { qos }]));
    this.client.subscribeAsync(filters)
      .then(() => this.log.info({ subscriptions: this.subscriptions.size }, 're-subscribed'))
      .catch((err) => this.log.warn({ err: (err as Error).message }, 're-subscribe failed'));
  }

  async publish(topic: string, payload: Buffer | string, opts: PublishOptions = {}): Promise<void> {
    assertPublishTopic(topic);
    const qos = opts.qos ?? 1;
    const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
    const size = publishPacketBytes(topic, body.length, qos);
    if (size > this.maxPacketBytes) throw new Error(`publish to ${topic} would be a ${size}-byte packet, over this link's ${this.maxPacketBytes}-byte limit; chunk it`);
    this.bytesOut += size;
    const properties = this.opts.protocolVersion === 5 && opts.correlationData ? { correlationData: opts.correlationData } : undefined;
    await this.client.publishAsync(topic, body, { qos, retain: opts.retain ?? false, properties });
  }

  get protocolVersion(): 4 | 5 {
    return this.opts.protocolVersion ?? 4;
  }

  publishJson(topic: string, value: unknown, opts: PublishOptions = {}): Promise<void> {
    return this.publish(topic, JSON.stringify(value), opts);
  }

  /** Publishes a payload as binary frames, each within the packet limit. Returns the bytes sent. */
  async publishFrames(topic: string, kind: FrameKind, meta: FrameMeta, payload: Uint8Array): Promise<number> {
    const overhead = publishPacketBytes(topic, 0, 1) + 4; // + slack for a longer length field
    const frames = encodeFrames(kind, meta, payload, this.maxPacketBytes - overhead);
    let bytes = 0;
    for (const frame of frames) {
      await this.publish(topic, frame, { qos: 1 });
      bytes += frame.length;
    }
    return bytes;
  }

  /** Publishes the final retained state, then disconnects cleanly (so the broker does not fire the will). */
  async close(finalState?: Record<string, unknown>): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.watchdog);
    if (finalState && this.client.connected) {
      await Promise.race([
        this.publishJson(this.opts.stateTopic, finalState, { retain: true, qos: 1 }).catch(() => undefined),
        new Promise((r) => setTimeout(r, 2000)),
      ]);
    }
    await this.client.endAsync(!this.client.connected);
  }

  private dispatch(topic: string, payload: Buffer, packet: IPublishPacket): void {
    this.bytesIn += publishPacketBytes(topic, payload.length, packet.qos === 2 ? 1 : packet.qos);
    for (const { filter, handler } of this.handlers) {
      if (!topicMatches(filter, topic)) continue;
      try {
        handler(topic, payload, packet);
      } catch (err) {
        this.log.warn({ err: (err as Error).message, topic }, 'message handler failed; message ignored');
      }
    }
  }
}
