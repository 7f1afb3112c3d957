import { EventEmitter } from 'node:events';
import mqtt, { type IClientOptions, type MqttClient, type IPublishPacket } from 'mqtt';
import type { Logger } from '../log';
import { logger } from '../log';
import { assertPublishTopic } from './topics';
import { encodeFrames, type FrameKind, type FrameMeta } from './frame';

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
  /** Largest MQTT packet this side will send; bigger payloads must be chunked (see publishFrames). */
  maxPacketBytes?: number;
  protocolVersion?: 4 | 5;
  connectTimeoutMs?: number;
  keepaliveSeconds?: number;
  log?: Logger;
}

export type MessageHandler = (topic: string, payload: Buffer, packet: IPublishPacket) => void;

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
  private readonly log: Logger;
  private closed = false;

  private constructor(private readonly client: MqttClient, private readonly opts: LinkOptions) {
    super();
    this.maxPacketBytes = opts.maxPacketBytes ?? DEFAULT_MAX_PACKET_BYTES;
    this.log = opts.log ?? logger('transport', { clientId: opts.clientId });
    client.on('message', (topic, payload, packet) => this.dispatch(topic, payload, packet));
    client.on('connect', () => {
      this.log.info({ url: opts.url }, 'connected');
      this.publishJson(opts.stateTopic, opts.birth(), { retain: true, qos: 1 }).catch((err) => this.log.warn({ err }, 'could not publish birth state'));
      this.emit('connect');
    });
    client.on('reconnect', () => this.log.info('reconnecting'));
    client.on('offline', () => { this.log.warn('broker unreachable'); this.emit('offline'); });
    client.on('error', (err) => this.log.warn({ err: err.message }, 'mqtt error'));
  }

  /** Connects and resolves once the broker accepted us; rejects with a clear message otherwise. */
  static connect(opts: LinkOptions): Promise<MqttLink> {
    const options: IClientOptions = {
      clientId: opts.clientId,
      username: opts.username,
      password: opts.password,
      protocolVersion: opts.protocolVersion ?? 4,
      keepalive: opts.keepaliveSeconds ?? 30,
      connectTimeout: opts.connectTimeoutMs ?? 10_000,
      reconnectPeriod: 1000,
      clean: true,
      will: { topic: opts.stateTopic, payload: Buffer.from(JSON.stringify(opts.will)), qos: 1, retain: true },
    };
    const client = mqtt.connect(opts.url, options);
    const link = new MqttLink(client, opts);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`could not connect to the MQTT broker at ${opts.url} within ${options.connectTimeout} ms`)), options.connectTimeout);
      const fail = (err: Error) => {
        clearTimeout(timer);
        client.removeListener('connect', ok);
        client.end(true);
        reject(err);
      };
      const ok = () => {
        clearTimeout(timer);
        client.removeListener('error', onError);
        resolve(link);
      };
      const onError = (err: Error & { code?: unknown }) => {
        // A refused CONNECT (bad credentials, not authorised) will not get better by retrying.
        if (typeof err.code === 'number' && err.code !== 0) fail(new Error(`the MQTT broker at ${opts.url} refused the connection: ${err.message}`));
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
    await this.client.subscribeAsync(filter, { qos });
  }

  async publish(topic: string, payload: Buffer | string, opts: { retain?: boolean; qos?: 0 | 1 } = {}): Promise<void> {
    assertPublishTopic(topic);
    const qos = opts.qos ?? 1;
    const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
    const size = publishPacketBytes(topic, body.length, qos);
    if (size > this.maxPacketBytes) throw new Error(`publish to ${topic} would be a ${size}-byte packet, over this link's ${this.maxPacketBytes}-byte limit; chunk it`);
    this.bytesOut += size;
    await this.client.publishAsync(topic, body, { qos, retain: opts.retain ?? false });
  }

  publishJson(topic: string, value: unknown, opts: { retain?: boolean; qos?: 0 | 1 } = {}): Promise<void> {
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
