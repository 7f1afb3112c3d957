import mqtt from 'mqtt';
import { Reassembler, type TaskMessage, type Topics } from '../../agent/transport';

/**
 * A hand-driven node for aggregator tests: announces itself (retained online state, then a
 * heartbeat every 200 ms, since a retained state alone is history to the aggregator) and hands
 * every task it receives to `onTask`. `state` adds fields to its birth state (e.g. features, labels).
 */
export async function fakeNode(url: string, topics: Topics, id: string, onTask: (task: TaskMessage, c: mqtt.MqttClient) => Promise<void>, state: Record<string, unknown> = {}): Promise<mqtt.MqttClient> {
  const c = await mqtt.connectAsync(url, { clientId: `${topics.fleet}-${id}` });
  const r = new Reassembler();
  c.on('message', (_t, payload) => {
    const whole = r.push('agg', payload);
    if (whole) void onTask(whole.meta as unknown as TaskMessage, c);
  });
  await c.subscribeAsync(topics.nodeTask(id), { qos: 1 });
  await c.publishAsync(topics.nodeState(id), JSON.stringify({ online: true, node: id, session: 1, samples: 100, ts: Date.now(), ...state }), { qos: 1, retain: true });
  const beat = () => c.publishAsync(topics.nodeHeartbeat(id), JSON.stringify({ node: id, session: 1, ts: Date.now() }), { qos: 0 }).catch(() => undefined);
  const timer = setInterval(beat, 200);
  c.on('end', () => clearInterval(timer));
  return c;
}
