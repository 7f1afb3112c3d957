#!/usr/bin/env node
import { constants as osConstants } from 'node:os';
import * as path from 'node:path';
import { Command, Option } from 'commander';
import { setLogLevel, logger } from '../log';
import { startEmbeddedBroker } from '../broker';
import { addAgentCommand } from './commands/agent';
import { Topics } from '../transport';
import { simulate, runAggregatorJob, formatRound, loadShard, parseShard, parseDatasetName, simFleetName, checkOutput, type JobReport } from '../sim';
import { brokerOptions, int, jobOptions, logLevelOption, positive, tlsOptions } from './options';
import { parseTierMix } from '../sim/tiers';
import { femnistDir } from '../sim/datasets';
import { femnistWriterCount, parsePartition } from '../data';
import { loadConfigFile } from '../config';
import { ensureStateDir, resolveStateDir } from '../state';
import { addProfileCommand } from './commands/profile';
import type { RoundRecord } from '../aggregator';
import { addConfigCommand } from './commands/config';
import { addInstallServiceCommand } from './commands/install-service';

type Opts = Record<string, any>; // commander's parsed options, validated by each option's parser

function printRound(rounds: number) {
  return (r: RoundRecord) => process.stdout.write(formatRound(r, rounds) + '\n');
}

/** A run's total bytes: MB with one decimal, kB below 1 MB (a top-k run's 0.02 MB a round must not sum to "0.0 MB"). */
function byteSize(bytes: number): string {
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} kB`;
}

/** `--partition owner` needs a data set with owners, and at most one gateway per owner: refused here, not by each gateway. */
function checkOwnerPartition(o: Opts, mode: 'processes' | 'virtual'): void {
  if (parsePartition(o.partition).kind !== 'owner') return;
  const dataset = parseDatasetName(o.dataset);
  if (dataset !== 'femnist') throw new Error(`--partition owner: ${dataset} has no owners (FEMNIST has writers); use --dataset femnist, or --partition iid or dirichlet:<alpha>`);
  if (mode === 'virtual') return; // its devices are counted once the trace or tiers give them
  const writers = femnistWriterCount(femnistDir(o.dataDir), 'train');
  if (o.clients > writers) throw new Error(`--partition owner: --clients ${o.clients} is more than the ${writers} FEMNIST writers (each gateway holds whole writers); use at most ${writers}`);
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function printSummary(report: JobReport): void {
  if (report.nothingToDo) return void process.stdout.write(report.nothingToDo + '\n');
  const up = report.rounds.reduce((s, r) => s + r.bytesUp, 0);
  const down = report.rounds.reduce((s, r) => s + r.bytesDown, 0);
  const f = report.final;
  process.stdout.write(
    `done: ${plural(report.rounds.length, 'round')} in ${report.seconds.toFixed(1)} s` +
      (f ? `, final accuracy ${f.accuracy.toFixed(4)}, loss ${f.loss.toFixed(4)}` : '') +
      `, ${byteSize(up)} up, ${byteSize(down)} down` +
      (report.modelFile ? `, model in ${report.modelFile}` : '') + '\n',
  );
}

/** Stops cleanly on SIGINT/SIGTERM: `stop` runs once, a second signal exits at once. */
function onSignals(stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(130);
    stopping = true;
    logger('cli').info({ signal }, 'stopping');
    stop().then(() => process.exit(0), (err) => {
      logger('cli').error({ err: (err as Error).message }, 'error while stopping');
      process.exit(1);
    });
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}

/**
 * SIGINT/SIGTERM abort the run: the caller cleans up (gateways, broker, temporary state) and the
 * process exits `stoppedCode` (default 128 + the signal's number, as a shell expects). A second
 * signal exits at once (the gateways still notice: their IPC channel closes).
 */
function abortOnSignals(o: { stoppedCode?: number; say?: (signal: NodeJS.Signals) => void } = {}): { signal: AbortSignal; exitIfStopped(err: unknown): never } {
  const ctl = new AbortController();
  let received: NodeJS.Signals | undefined;
  const signalCode = () => 128 + osConstants.signals[received!];
  const code = () => o.stoppedCode ?? signalCode();
  const say = o.say ?? ((signal: NodeJS.Signals) => process.stderr.write(`fedgate: ${signal}: stopping\n`));
  const handler = (signal: NodeJS.Signals) => {
    if (received) process.exit(signalCode());
    received = signal;
    say(signal);
    ctl.abort();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    signal: ctl.signal,
    exitIfStopped(err: unknown): never {
      if (received) process.exit(code());
      throw err;
    },
  };
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function jobFrom(o: Opts) {
  return {
    prefix: o.prefix, fleet: o.fleet, username: o.username, password: o.password, maxPacketBytes: o.maxPacketBytes,
    dataset: parseDatasetName(o.dataset), dataDir: o.dataDir, hidden: o.hidden, rounds: o.rounds,
    clientsPerRound: o.clientsPerRound, epochs: o.epochs, batchSize: o.batchSize, lr: o.lr, codec: o.codec,
    strategy: o.strategy, overcommit: o.overcommit, targetQuantile: o.targetQuantile, maxIdleRounds: o.maxIdleRounds, foldLate: o.foldLate,
    deadlineSeconds: o.deadline, seed: o.seed, checkpoint: o.checkpoint, resume: o.resume, fresh: o.fresh, modelOut: o.modelOut, report: o.report,
  };
}

/** The aggregator's settings file under the flags: a flag given on the command line (or by its environment variable) wins. */
async function overlayConfigFile(o: Opts, cmd: Command): Promise<Opts> {
  const c = await loadConfigFile(o.config, 'aggregator');
  setLogLevel(c.logging.level);
  // Relative paths of the settings file are in the state directory: under systemd the working
  // directory is /, read-only (ProtectSystem=strict), and StateDirectory= is where state belongs.
  const stateDir = resolveStateDir(c.stateDir);
  if ([c.job.checkpoint, c.job.modelOut].some((p) => p && !path.isAbsolute(p))) await ensureStateDir(c.stateDir);
  const inState = (p: string | undefined) => (p === undefined ? undefined : path.resolve(stateDir, p));
  const fromFile: Opts = {
    broker: c.broker.url, username: c.broker.username, password: c.broker.password, maxPacketBytes: c.broker.maxPacketBytes,
    tlsCa: c.broker.tls.ca, tlsCert: c.broker.tls.cert, tlsKey: c.broker.tls.key, tlsVerify: c.broker.tls.rejectUnauthorized,
    clientId: c.broker.clientId, protocolVersion: c.broker.protocolVersion,
    prefix: c.fleet.prefix, fleet: c.fleet.name, logLevel: c.logging.level, dataset: c.data.dataset, dataDir: c.data.dataDir,
    hidden: c.model.hidden, rounds: c.job.rounds, clientsPerRound: c.job.clientsPerRound, minClients: c.job.minClients, wait: c.job.waitSeconds,
    epochs: c.job.epochs, batchSize: c.job.batchSize, lr: c.job.lr, deadline: c.job.deadlineSeconds, seed: c.job.seed, checkpoint: inState(c.job.checkpoint),
    resume: c.job.resume === 'always' ? true : c.job.resume === 'auto' ? 'auto' : undefined,
    modelOut: inState(c.job.modelOut), strategy: c.job.strategy, overcommit: c.job.overcommit, targetQuantile: c.job.targetQuantile,
    maxIdleRounds: c.job.maxIdleRounds, foldLate: c.job.foldLate,
    codec: c.compression.codec === 'auto' ? 'auto' : { codec: c.compression.codec, k: c.compression.k, blockSize: c.compression.blockSize, stochastic: c.compression.stochastic },
  };
  const out: Opts = { ...o };
  for (const [key, value] of Object.entries(fromFile)) {
    const source = cmd.getOptionValueSource(key);
    if (value !== undefined && source !== 'cli' && source !== 'env') out[key] = value;
  }
  return out;
}

export function buildCli(): Command {
  const program = new Command('fedgate')
    .description('Federated learning for fleets of IoT edge gateways')
    .hook('preAction', (_cmd, action) => setLogLevel(action.opts().logLevel ?? 'warn'));

  jobOptions(brokerOptions(program.command('simulate').description('run a whole fleet on this machine: embedded broker, aggregator, one process per gateway'), false))
    .option('--clients <n>', 'simulated gateways (one OS process each)', int(1, 1000), 10)
    .option('--partition <spec>', 'how data is split: iid, dirichlet:<alpha>, or owner (FEMNIST: whole writers per gateway; --clients at most the writers)', 'dirichlet:0.5')
    .option('--max-samples <n>', 'cap on each gateway\'s training rows (quick runs)', int(1))
    .addOption(new Option('--mode <mode>', 'processes: one OS process per gateway over a real broker; virtual: a virtual clock with device models (large fleets)').choices(['processes', 'virtual']).default('processes'))
    .option('--tiers <mix>', 'device tiers and their relative shares (weights, need not add up to 100), e.g. pi3:25,pi4:25,jetson:25,x86:25 (built in: pi3, pi4, jetson, x86); processes mode slows each gateway process to its tier')
    .option('--trace <file>', 'virtual mode: a JSON trace of devices (compute, bandwidth, availability windows) instead of --tiers')
    .option('--time-budget <seconds>', 'virtual mode: stop after this much simulated time (without --rounds, the budget alone ends the run)', positive)
    .option('--time-scale <x>', 'processes mode with --tiers: simulated seconds per real second', positive, 10)
    .action(async (o: Opts, cmd: Command) => {
      if (o.mode === 'virtual') {
        // `--model-out ''` is the documented "no model": nothing to refuse.
        const unused = ['checkpoint', 'resume', 'fresh', 'modelOut', 'broker'].filter((k) => cmd.getOptionValueSource(k) === 'cli' && !(k === 'modelOut' && o.modelOut === ''));
        if (unused.length) throw new Error(`${unused.map((k) => cmd.options.find((x) => x.attributeName() === k)!.long).join(', ')}: not available with --mode virtual (it runs no broker and keeps no checkpoint or model)`);
        if (o.report) checkOutput('--report', o.report);
        checkOwnerPartition(o, 'virtual');
        // A time budget without --rounds: the budget alone ends the run.
        const rounds = o.timeBudget !== undefined && cmd.getOptionValueSource('rounds') !== 'cli' ? Infinity : o.rounds;
        const { runVirtualJob, formatVirtualRound } = await import('../sim/run-virtual');
        const res = await runVirtualJob({ ...jobFrom(o), rounds, clients: o.clients, partition: o.partition, tiers: o.tiers, trace: o.trace, timeBudgetSeconds: o.timeBudget, maxSamples: o.maxSamples }, (r) => process.stdout.write(formatVirtualRound(r, rounds) + '\n'));
        const last = res.rounds.at(-1);
        process.stdout.write(`done: ${plural(res.rounds.length, 'round')}, ${last?.end.toFixed(0) ?? 0} s simulated, final accuracy ${last?.accuracy.toFixed(4) ?? '-'}\n`);
        return;
      }
      if (o.trace || o.timeBudget) throw new Error('--trace and --time-budget need --mode virtual');
      checkOwnerPartition(o, 'processes');
      const tiers = o.tiers ? parseTierMix(o.tiers, o.clients, o.seed) : undefined;
      if (o.broker && !['cli', 'env'].includes(cmd.getOptionValueSource('fleet') ?? '')) {
        o.fleet = simFleetName();
        process.stdout.write(`fleet ${o.fleet} on ${o.broker} (a fleet of its own; --fleet picks one)\n`);
      }
      const stop = abortOnSignals();
      const report = await simulate({ ...jobFrom(o), broker: o.broker, clients: o.clients, partition: o.partition, logLevel: o.logLevel, maxSamples: o.maxSamples, waitForClientsSeconds: 120, tiers, timeScale: o.timeScale, signal: stop.signal }, printRound(o.rounds))
        .catch((err) => stop.exitIfStopped(err));
      printSummary(report);
    });

  // Only its own options: --broker, credentials or a fleet would be silently meaningless here.
  program.command('broker').description('run the embedded MQTT broker (aedes, MQTT 3.1.1)')
    .option('--port <n>', 'TCP port', int(0, 65535), 1883)
    .option('--host <addr>', 'address to listen on (loopback by default: the embedded broker has no authentication)', '127.0.0.1')
    .addOption(logLevelOption())
    .action(async (o: Opts) => {
      const broker = await startEmbeddedBroker({ port: o.port, host: o.host });
      if (!isLoopback(o.host)) {
        process.stderr.write(`fedgate: WARNING: the embedded broker has no authentication and no TLS, and --host ${o.host} exposes it beyond this machine: ` +
          `anyone who reaches port ${broker.port} can read every update and send any task. For a network, use mosquitto with broker-config/ (users, ACL, TLS).\n`);
      }
      process.stdout.write(`broker listening on ${broker.url}\n`);
      onSignals(() => broker.close());
    });

  tlsOptions(jobOptions(brokerOptions(program.command('aggregator').description('run the rounds of a federated job against a broker'), false,
    logLevelOption('log level (with --config: its logging.level, unless given here)'))))
    .option('--client-id <id>', 'MQTT client id (default: fedgate-aggregator-<fleet>-<random>, new on every start)')
    .addOption(new Option('--protocol-version <v>', 'MQTT protocol version').choices(['4', '5']).argParser((v) => Number(v)))
    .option('--config <file>', 'settings file (YAML or JSON; see `fedgate config schema --role aggregator`); flags given explicitly override it')
    .option('--min-clients <n>', 'nodes to wait for before each round', int(1), 1)
    .option('--wait <seconds>', 'how long to wait for --min-clients', int(0), 300)
    .action(async (o: Opts, cmd: Command) => {
      if (o.config) o = await overlayConfigFile(o, cmd);
      if (!o.broker) throw new Error('--broker <url> is required (or broker.url in --config)');
      // SIGINT/SIGTERM end the job through its abort signal, so it winds down (the evaluator's ONNX
      // Runtime worker finishes its run and closes) before the process exits: exiting while that
      // worker was inside session.run aborted the process (exit 134, a core dump under systemd).
      // A requested stop exits 0, as systemd expects; the checkpoint keeps the whole rounds.
      const stop = abortOnSignals({ stoppedCode: 0 });
      const tls = { ca: o.tlsCa, cert: o.tlsCert, key: o.tlsKey, rejectUnauthorized: o.tlsVerify !== false };
      const report = await runAggregatorJob({ ...jobFrom(o), url: o.broker, tls, clientId: o.clientId, protocolVersion: o.protocolVersion, minClients: o.minClients, waitForClientsSeconds: o.wait, signal: stop.signal }, printRound(o.rounds))
        .catch((err) => stop.exitIfStopped(err));
      printSummary(report);
    });

  addAgentCommand(program, brokerOptions);
  addConfigCommand(program);
  addProfileCommand(program);
  addInstallServiceCommand(program);
  hintHelpOnError(program);

  return program;
}

/** A usage error gets its one line and where to read more, not the whole help under it. */
function hintHelpOnError(cmd: Command, name = cmd.name()): void {
  cmd.showHelpAfterError(`(see ${name} --help)`);
  for (const sub of cmd.commands) hintHelpOnError(sub, `${name} ${sub.name()}`);
}

if (require.main === module) {
  buildCli().parseAsync(process.argv).catch((err: Error & { exitCode?: number }) => {
    process.stderr.write(`fedgate: ${err.message}\n`);
    // An error may carry its own status, e.g. one a systemd unit lists in RestartPreventExitStatus.
    process.exit(Number.isInteger(err.exitCode) && err.exitCode! > 0 && err.exitCode! < 256 ? err.exitCode! : 1);
  });
}
