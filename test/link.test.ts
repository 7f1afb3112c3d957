import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import pino from 'pino';
import { Writable } from 'node:stream';
import { MqttLink, FrameKind, Reassembler, Topics } from '../agent/transport';
import { startAedes, startMosquitto, mosquittoMissing, type TestBroker } from './helpers/brokers';

const missing = mosquittoMissing();
const brokers: [string, () => Promise<TestBroker>][] = [['aedes', startAedes]];
if (!missing) brokers.push(['mosquitto', () => startMosquitto()]);
else it.skip(`mosquitto: ${missing}`, () => undefined);

const topics = new Topics('fedgate', 'linktest');

function watcher(url: string, filter: string) {
  const seen: { topic: string; payload: Buffer; retain: boolean }[] = [];
  const client = mqtt.connect(url, { clientId: `watch-${Math.random().toString(16).slice(2, 10)}` });
  const ready = new Promise<void>((resolve) => client.on('connect', () => client.subscribe(filter, { qos: 1 }, () => resolve())));
  client.on('message', (topic, payload, packet) => seen.push({ topic, payload, retain: packet.retain }));
  return { seen, ready, close: () => client.endAsync(true) };
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const t = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > t) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.each(brokers)('MQTT link over %s', (_name, start) => {
  let broker: TestBroker;
  beforeAll(async () => { broker = await start(); });
  afterAll(async () => { await broker?.close(); });

  const linkFor = (id: string, maxPacketBytes?: number) => MqttLink.connect({
    url: broker.url, clientId: id, stateTopic: topics.nodeState(id), maxPacketBytes,
    birth: () => ({ online: true, node: id }), will: { online: false, node: id },
  });

  it('publishes a retained birth state, a clean offline state on close, and the will on a lost connection', async () => {
    const a = await linkFor('gw-birth');
    const w = watcher(broker.url, topics.nodeState('gw-birth'));
    await w.ready;
    await until(() => w.seen.length >= 1);
    expect(JSON.parse(w.seen[0].payload.toString())).toEqual({ online: true, node: 'gw-birth' });
    expect(w.seen[0].retain).toBe(true); // delivered from the retained store to a late subscriber
    await a.close({ online: false, node: 'gw-birth', clean: true });
    await until(() => w.seen.length >= 2);
    expect(JSON.parse(w.seen[1].payload.toString())).toEqual({ online: false, node: 'gw-birth', clean: true });

    const b = await linkFor('gw-will');
    const w2 = watcher(broker.url, topics.nodeState('gw-will'));
    await w2.ready;
    await until(() => w2.seen.length >= 1);
    // Fault injection: cut the TCP connection without a DISCONNECT, as a power loss would.
    (b as unknown as { client: { stream: { destroy(): void }; options: { reconnectPeriod: number } } }).client.options.reconnectPeriod = 0;
    (b as unknown as { client: { stream: { destroy(): void } } }).client.stream.destroy();
    await until(() => w2.seen.some((m) => JSON.parse(m.payload.toString()).online === false), 10_000);
    expect(JSON.parse(w2.seen[w2.seen.length - 1].payload.toString())).toEqual({ online: false, node: 'gw-will' });
    await Promise.all([w.close(), w2.close(), b.close()]);
  });

  it('carries a 1 MB payload in chunks under the packet limit, byte-exact', async () => {
    const sender = await linkFor('gw-big', 64 * 1024);
    const receiver = await linkFor('gw-recv');
    const payload = new Uint8Array(1_000_000).map((_, i) => (i * 31 + 7) & 0xff);
    const r = new Reassembler();
    let got: Uint8Array | undefined;
    await receiver.subscribe(topics.nodeUpdate('gw-big'), (_t, data) => {
      const whole = r.push('gw-big', data);
      if (whole) got = whole.payload;
    });
    const sent = await sender.publishFrames(topics.nodeUpdate('gw-big'), FrameKind.Update, { round: 1 }, payload);
    await until(() => got !== undefined, 10_000);
    expect(Buffer.from(got!).equals(Buffer.from(payload))).toBe(true);
    expect(sent).toBeGreaterThan(1_000_000);
    expect(sent).toBeLessThan(1_000_000 + 16 * 100); // 16 chunks, each with a 32-byte header and tiny metadata
    await Promise.all([sender.close(), receiver.close()]);
  });

  it('refuses a single publish over the packet limit before sending anything', async () => {
    const link = await linkFor('gw-limit', 2048);
    await expect(link.publish(topics.nodeUpdate('gw-limit'), Buffer.alloc(4096))).rejects.toThrow('over this link\'s 2048-byte limit');
    await expect(link.publish('fedgate/+/x', 'x')).rejects.toThrow('wildcards');
    expect(link.connected).toBe(true);
    await link.close();
  });

  // Regression: every agent of `npm start` warned "mqtt error: write after end" on its way out (mqtt.js
  // writes the PUBACK of a message that arrives after DISCONNECT).
  it('closing while QoS 1 messages keep arriving logs no warning', async () => {
    const lines: { level: number; msg: string }[] = [];
    const sink = new Writable({ write(chunk, _enc, done) { lines.push(JSON.parse(String(chunk))); done(); } });
    const link = await MqttLink.connect({
      url: broker.url, clientId: 'gw-closing', stateTopic: topics.nodeState('gw-closing'),
      birth: () => ({ online: true }), will: { online: false }, log: pino({ level: 'debug' }, sink),
    });
    let got = 0;
    await link.subscribe(topics.nodeTask('gw-closing'), () => got++);
    const pub = await mqtt.connectAsync(broker.url, { clientId: 'pub-closing' });
    let sending = true;
    const flood = (async () => { while (sending) await Promise.all(Array.from({ length: 20 }, () => pub.publishAsync(topics.nodeTask('gw-closing'), 'x', { qos: 1 }))); })();
    await until(() => got >= 20);
    await link.close({ online: false });
    await new Promise((r) => setTimeout(r, 300));
    sending = false;
    await flood;
    await pub.endAsync();
    expect(lines.filter((l) => l.level >= 40)).toEqual([]);
  });

  it('fails to connect with a clear error when nothing listens', async () => {
    await expect(MqttLink.connect({ url: 'mqtt://127.0.0.1:1', clientId: 'nobody', stateTopic: topics.nodeState('nobody'), birth: () => ({}), will: {}, connectTimeoutMs: 1500 }))
      .rejects.toThrow('could not connect to the MQTT broker at mqtt://127.0.0.1:1');
  });
});
