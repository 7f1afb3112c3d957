/**
 * The topic scheme. Everything lives under `<prefix>/<fleet>/`, default `fedgate/default/`:
 *
 *   <base>/aggregator/state          retained JSON: aggregator online/offline (last will: offline)
 *   <base>/node/<id>/state           retained JSON: node online/offline (last will: offline)
 *   <base>/node/<id>/heartbeat       JSON, every few seconds while online
 *   <base>/node/<id>/task            binary frames: the node's work for a round + the model to start from
 *   <base>/node/<id>/update          binary frames: the node's model update (chunked)
 *   <base>/node/<id>/profile         retained JSON: hardware, measured training and link throughput
 *   <base>/config                    retained JSON {version, config}: settings for every node of the fleet
 *   <base>/node/<id>/config          retained JSON {version, config}: this node's settings (over the fleet's)
 *   <base>/node/<id>/request/<action>   JSON {transaction, data}: management API (get_config, set_config, …)
 *   <base>/node/<id>/response/<action>  JSON {status, data, error, transaction}
 *
 * A node only ever publishes below its own `node/<id>/`, which makes a per-node broker ACL simple.
 */
export const MAX_ID_LENGTH = 64;

/** Throws unless `id` can stand as one topic level: no wildcard, no separator, no `$` prefix, not empty, not over-long. */
export function validateTopicLevel(id: unknown, what = 'node id'): string {
  if (typeof id !== 'string') throw new TypeError(`${what} must be a string, got ${typeof id}`);
  if (id.length === 0) throw new Error(`${what} must not be empty`);
  if (id.length > MAX_ID_LENGTH) throw new Error(`${what} "${id.slice(0, 20)}…" is ${id.length} characters long; at most ${MAX_ID_LENGTH} are allowed`);
  // MQTT-4.7.1: '+' and '#' are wildcards; '/' separates levels; MQTT-4.7.2: topics starting with '$' are the broker's.
  const bad = /[+#/\u0000]/.exec(id);
  if (bad) throw new Error(`${what} "${id}" contains "${bad[0] === '\u0000' ? 'NUL' : bad[0]}", which is not allowed in an MQTT topic level`);
  if (id.startsWith('$')) throw new Error(`${what} "${id}" starts with "$", which MQTT reserves for broker topics`);
  if (/\s/.test(id)) throw new Error(`${what} "${id}" contains white space`);
  return id;
}

export function validateNodeId(id: unknown): string {
  return validateTopicLevel(id, 'node id');
}

/** Throws if a topic to publish to holds a wildcard (MQTT-3.3.2-2) or is empty. */
export function assertPublishTopic(topic: string): void {
  if (!topic) throw new Error('cannot publish to an empty topic');
  if (/[+#]/.test(topic)) throw new Error(`cannot publish to "${topic}": wildcards are not allowed in a publish topic`);
}

export class Topics {
  readonly base: string;

  constructor(readonly prefix = 'fedgate', readonly fleet = 'default') {
    for (const level of prefix.split('/')) validateTopicLevel(level, 'topic prefix level');
    validateTopicLevel(fleet, 'fleet name');
    this.base = `${prefix}/${fleet}`;
  }

  get aggregatorState(): string { return `${this.base}/aggregator/state`; }
  nodeState(id: string): string { return this.node(id, 'state'); }
  nodeHeartbeat(id: string): string { return this.node(id, 'heartbeat'); }
  nodeTask(id: string): string { return this.node(id, 'task'); }
  nodeUpdate(id: string): string { return this.node(id, 'update'); }
  nodeProfile(id: string): string { return this.node(id, 'profile'); }
  nodeConfig(id: string): string { return this.node(id, 'config'); }
  nodeRequests(id: string): string { return this.node(id, 'request/+'); }
  nodeResponse(id: string, action: string): string { return this.node(id, `response/${validateTopicLevel(action, 'action')}`); }
  get fleetConfig(): string { return `${this.base}/config`; }

  /** Subscription matching one leaf for every node, e.g. `all('state')` = `<base>/node/+/state`. */
  allNodes(leaf: 'state' | 'heartbeat' | 'update' | 'profile'): string { return `${this.base}/node/+/${leaf}`; }

  /** The node id and leaf of a `<base>/node/<id>/<leaf...>` topic, or undefined for any other topic. */
  parseNodeTopic(topic: string): { id: string; leaf: string } | undefined {
    const head = `${this.base}/node/`;
    if (!topic.startsWith(head)) return undefined;
    const rest = topic.slice(head.length);
    const slash = rest.indexOf('/');
    if (slash <= 0) return undefined;
    return { id: rest.slice(0, slash), leaf: rest.slice(slash + 1) };
  }

  private node(id: string, leaf: string): string {
    return `${this.base}/node/${validateNodeId(id)}/${leaf}`;
  }
}
