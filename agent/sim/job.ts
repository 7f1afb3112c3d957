import { closeSync, existsSync, openSync, statSync, unlinkSync } from 'node:fs';
import * as path from 'node:path';
import { Aggregator, BalancedStrategy, FedAvgStrategy, loadCheckpoint, type RoundRecord, type Strategy } from '../aggregator';
import { chooseCodec, codecLabel } from '../compress';
import { buildInferenceModel, initParams, paramCount, type ModelSpec } from '../model';
import { Topics, loadTls, type CodecChoice, type TlsSettings } from '../transport';
import { logger, type Logger } from '../log';
import { writeFileAtomic } from '../state';
import { createEvaluator } from './evaluator';
import { defaultSpec, loadSplit, type DatasetName } from './datasets';

export interface JobOptions {
  url: string;
  username?: string;
  password?: string;
  /** broker.tls.* (files are read before the job starts), MQTT client id and protocol version. */
  tls?: TlsSettings;
  clientId?: string;
  protocolVersion?: 4 | 5;
  prefix: string;
  fleet: string;
  maxPacketBytes?: number;
  dataset: DatasetName;
  dataDir?: string;
  hidden: number[];
  rounds: number;
  /** The fleet size to wait for before the first round. */
  minClients: number;
  waitForClientsSeconds: number;
  clientsPerRound: number;
  epochs: number;
  batchSize: number;
  lr: number;
  /** A codec pinned for the whole fleet, or 'auto': chosen per node from its link and the deadline. */
  codec: CodecChoice | 'auto';
  /** balanced (default): hardware-aware; fedavg: random K, fixed epochs, wait for all. */
  strategy?: 'balanced' | 'fedavg';
  overcommit?: number;
  targetQuantile?: number;
  maxIdleRounds?: number;
  foldLate?: boolean;
  /** fedavg: each round's deadline; balanced: the most a round may be given. */
  deadlineSeconds: number;
  seed: number;
  checkpoint?: string;
  /** Continue from the checkpoint; 'auto': only if it exists. */
  resume?: boolean | 'auto';
  /** Start from round 1 and overwrite an existing checkpoint (without it or `resume`, an existing checkpoint is refused). */
  fresh?: boolean;
  modelOut?: string;
  report?: string;
  /** Aborting ends the open round, stops the aggregator and rejects (no model, no report; the checkpoint keeps the rounds done). */
  signal?: AbortSignal;
}

export interface JobReport {
  config: Record<string, unknown>;
  rounds: RoundRecord[];
  final?: { accuracy: number; loss: number };
  seconds: number;
  modelFile?: string;
  /** Set when `resume` found the checkpoint already holding every round asked: nothing was run or written. */
  nothingToDo?: string;
}

/** Runs the aggregator side of a federated job to its last round; returns (and optionally writes) the report. */
export async function runAggregatorJob(opts: JobOptions, onRound: (r: RoundRecord) => void = () => undefined, onStart?: (agg: Aggregator) => void): Promise<JobReport> {
  const log = logger('job');
  const started = Date.now();
  const resume = resumes(opts);
  const done = await checkJobFiles(opts);
  const tls = loadTls(opts.tls);
  if (done) return done;
  const test = loadSplit({ dataset: opts.dataset, dataDir: opts.dataDir }, 'test');
  const spec: ModelSpec = defaultSpec(test, opts.hidden);
  const evaluator = await createEvaluator(spec, test);
  const strategy = buildStrategy(opts, paramCount(spec));
  const aggLog = logger('aggregator');
  const aggregator = new Aggregator({
    log: aggLog,
    url: opts.url,
    username: opts.username,
    password: opts.password,
    tls,
    clientId: opts.clientId,
    protocolVersion: opts.protocolVersion,
    maxPacketBytes: opts.maxPacketBytes,
    topics: new Topics(opts.prefix, opts.fleet),
    spec,
    initialParams: initParams(spec, opts.seed),
    rounds: opts.rounds,
    strategy,
    minClients: opts.minClients,
    waitForClientsSeconds: opts.waitForClientsSeconds,
    seed: opts.seed,
    evaluate: evaluator.evaluate,
    checkpointFile: opts.checkpoint,
    resume,
    foldLate: opts.foldLate,
  });
  aggregator.on('round', onRound);
  let ran = 0;
  let joined = 0;
  aggregator.on('round', (r: RoundRecord) => {
    ran++;
    if (r.participants > 0) joined++;
  });
  const abort = () => void aggregator.stop();
  opts.signal?.addEventListener('abort', abort, { once: true });
  try {
    await connectQuietly(aggregator, aggLog);
    opts.signal?.throwIfAborted();
    onStart?.(aggregator);
    const result = await aggregator.run();
    opts.signal?.throwIfAborted();
    // An empty fleet (a wrong fleet name, prefix or broker) must not pass for a run: its "model" is the untrained one.
    if (ran > 0 && joined === 0) throw new Error(`no gateway took part in ${ran === 1 ? 'the round' : `any of the ${ran} rounds`}: check --broker, --prefix and --fleet (no model or report written)`);
    let modelFile: string | undefined;
    if (opts.modelOut) {
      modelFile = path.resolve(opts.modelOut);
      await writeOutput(modelFile, buildInferenceModel(spec, { weights: result.params }));
      log.info({ file: modelFile }, 'final model written');
    }
    const { username: _u, password: _p, signal: _s, ...config } = opts;
    const report: JobReport = {
      config: { ...config, model: spec, paramCount: paramCount(spec), strategy: strategy.name },
      rounds: result.rounds,
      final: result.final,
      seconds: (Date.now() - started) / 1000,
      modelFile,
    };
    if (opts.report) await writeOutput(path.resolve(opts.report), Buffer.from(JSON.stringify(report, null, 2) + '\n'));
    return report;
  } finally {
    opts.signal?.removeEventListener('abort', abort);
    await aggregator.stop().catch(() => undefined);
    await evaluator.close();
  }
}

/**
 * While the first connection is pending, the link warns of every failed attempt (one raw line each);
 * at the default level the connect's own error ("could not connect … within …") says it once, clearly.
 * The link's logger is a child of `log` and follows its level.
 */
async function connectQuietly(aggregator: Aggregator, log: Logger): Promise<void> {
  const level = log.level;
  if (level === 'warn') log.level = 'error';
  try {
    await aggregator.start();
  } finally {
    log.level = level;
  }
}

/** The strategy a job names, with the codec pinned or chosen per node. */
export function buildStrategy(opts: Pick<JobOptions, 'strategy' | 'codec' | 'clientsPerRound' | 'epochs' | 'batchSize' | 'lr' | 'deadlineSeconds' | 'seed' | 'overcommit' | 'targetQuantile' | 'maxIdleRounds'>, params: number): Strategy {
  const fixed: CodecChoice = opts.codec === 'auto' ? { codec: 'int8' } : opts.codec;
  if (opts.strategy === 'fedavg') {
    // A node's own pin wins (the agent encodes with it whatever the task says), then the job's codec.
    const codecFor = (n: { pinnedCodec?: CodecChoice }) => n.pinnedCodec ?? fixed;
    return new FedAvgStrategy({ clientsPerRound: opts.clientsPerRound, epochs: opts.epochs, batchSize: opts.batchSize, lr: opts.lr, codec: fixed, codecFor, deadlineSeconds: opts.deadlineSeconds, seed: opts.seed });
  }
  return new BalancedStrategy({
    clientsPerRound: opts.clientsPerRound,
    epochs: opts.epochs,
    batchSize: opts.batchSize,
    lr: opts.lr,
    seed: opts.seed,
    paramCount: params,
    codec: fixed,
    overcommit: opts.overcommit,
    targetQuantile: opts.targetQuantile,
    maxIdleRounds: opts.maxIdleRounds,
    maxDeadlineSeconds: opts.deadlineSeconds,
    codecFor: (node, budget) => {
      const pinned = node.pinnedCodec ?? (opts.codec !== 'auto' ? opts.codec : undefined);
      // Lossless float32 is never chosen automatically: int8 is the floor (≤ 0.3 points, 4× fewer bytes).
      return chooseCodec({ paramCount: params, upBytesPerSecond: node.profile?.upBytesPerSecond ?? null, uploadBudgetSeconds: budget, pinned, allowed: ['int8', 'int4', 'topk', 'topk-int8'] }).codec as CodecChoice;
    },
  });
}

export { codecLabel };

/** Reports and models, written atomically (temp file, fsync, rename) into a folder checked by checkOutput. */
export async function writeOutput(file: string, data: Uint8Array): Promise<void> {
  await writeFileAtomic(file, data, 0o644);
}

/**
 * Refuses, before any work, a file the run could not write at its end: its folder must exist (none is
 * created: a typo must not grow a tree) and take a new file (the atomic write's temporary one).
 */
export function checkOutput(option: string, file: string): void {
  const abs = path.resolve(file);
  const dir = path.dirname(abs);
  const fail = (why: string) => new Error(`${option} ${file}: ${why}`);
  let at = dir;
  while (!existsSync(at)) at = path.dirname(at);
  if (!statSync(at).isDirectory()) throw fail(`${at} is not a folder`);
  if (at !== dir) throw fail(`folder ${dir} does not exist (create it first)`);
  if (existsSync(abs) && statSync(abs).isDirectory()) throw fail('is a folder');
  const probe = path.join(dir, `.${path.basename(abs)}.${process.pid}.probe`);
  try {
    closeSync(openSync(probe, 'wx'));
    unlinkSync(probe);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM') throw fail(`no permission to write in ${dir}`);
    if (code === 'EROFS') throw fail(`${dir} is on a read-only file system`);
    throw fail(`cannot create files in ${dir} (${code ?? (err as Error).message})`);
  }
}

/** Whether the job continues from its checkpoint: `resume` 'auto' does when the file exists. */
export function resumes(opts: Pick<JobOptions, 'checkpoint' | 'resume'>): boolean {
  return opts.resume === 'auto' ? opts.checkpoint !== undefined && existsSync(opts.checkpoint) : opts.resume === true;
}

/**
 * Checks every file of a job before any work starts (outputs writable, the checkpoint not
 * overwritten by mistake); returns the report to give when `resume` finds the job already done.
 */
export async function checkJobFiles(all: Pick<JobOptions, 'report' | 'modelOut' | 'checkpoint' | 'resume' | 'fresh' | 'rounds'>): Promise<JobReport | undefined> {
  const opts = { ...all, resume: resumes(all) };
  if (opts.report) checkOutput('--report', opts.report);
  if (opts.modelOut) checkOutput('--model-out', opts.modelOut);
  if (!opts.checkpoint) {
    if (all.resume) throw new Error('--resume needs --checkpoint <file>');
    return undefined;
  }
  checkOutput('--checkpoint', opts.checkpoint);
  if (opts.resume && opts.fresh) throw new Error('--resume and --fresh exclude each other: continue from the checkpoint, or start over');
  const exists = existsSync(opts.checkpoint);
  if (!opts.resume) {
    if (exists && !opts.fresh) throw new Error(`--checkpoint ${opts.checkpoint} already exists: --resume continues from it, --fresh starts over and overwrites it`);
    return undefined;
  }
  if (!exists) throw new Error(`--resume: checkpoint ${opts.checkpoint} does not exist`);
  const ckpt = await loadCheckpoint<{ rounds?: RoundRecord[] }>(opts.checkpoint);
  if (ckpt.round < opts.rounds) return undefined;
  const rounds = ckpt.state.rounds ?? [];
  const last = rounds.at(-1);
  return {
    config: { checkpoint: opts.checkpoint, rounds: opts.rounds, resume: true },
    rounds,
    final: last?.accuracy !== undefined ? { accuracy: last.accuracy, loss: last.loss ?? NaN } : undefined,
    seconds: 0,
    // The rounds may come from --rounds or from job.rounds of a settings file: worded for either.
    nothingToDo: `nothing to do: checkpoint ${opts.checkpoint} already holds round ${ckpt.round}, and the job asks for ${opts.rounds} round${opts.rounds === 1 ? '' : 's'} (ask for more rounds to train on; nothing was written)`,
  };
}

/** One line per round for a terminal. */
export function formatRound(r: RoundRecord, rounds: number): string {
  const mb = (b: number) => `${(b / 1e6).toFixed(2)} MB`;
  const late = r.tasks.filter((t) => t.late).length;
  const steps = r.tasks.map((t) => t.steps);
  const parts = [
    `round ${String(r.round).padStart(String(rounds).length)}/${rounds}`,
    `participants ${r.participants}/${r.selected}`,
    steps.length ? `work ${Math.min(...steps)}-${Math.max(...steps)} steps` : 'work -',
    r.accuracy !== undefined ? `acc ${r.accuracy.toFixed(4)}` : 'acc -',
    r.loss !== undefined ? `loss ${r.loss.toFixed(4)}` : 'loss -',
    `up ${mb(r.bytesUp)}`,
    `down ${mb(r.bytesDown)}`,
    `${r.seconds.toFixed(1)} s`,
  ];
  parts.push(`deadline ${r.deadlineSeconds.toFixed(1)} s`);
  if (late) parts.push(`late ${late} (${r.tasks.filter((t) => t.late).map((t) => t.node).join(',')})`);
  if (r.stale) parts.push(`stale ${r.stale}`);
  if (r.skipped?.length) parts.push(`skipped ${r.skipped.length} (${r.skipped.map((x) => `${x.node}: ${x.reason}`).join('; ')})`);
  if (!r.aggregated) parts.push('(model kept)');
  return parts.join('  ');
}
