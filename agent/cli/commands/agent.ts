import { Option, type Command } from 'commander';
import { Agent, restoredConfig } from '../../gateway';
import { ConfigError, loadConfigFile, defaultConfig, envOverrides, mergeConfig, validateConfig, type AgentConfig } from '../../config';
import { StateDir } from '../../state';
import { loadCsvDataset, select, type CsvDataset, type Shard } from '../../data';
import { loadShard, parseShard, parseDatasetName } from '../../sim';
import { TIERS } from '../../sim/tiers';
import { setLogLevel, logger } from '../../log';
import { loadTls } from '../../transport';
import { int, logLevelOption, positive, tlsOptions } from '../options';

type Opts = Record<string, any>;

/** Command-line settings, only those the user actually gave (a flag's default must not hide the config file's value). */
function flagsToPartial(cmd: Command, o: Opts): Record<string, unknown> {
  const given = (name: string) => o[name] !== undefined && ['cli', 'env'].includes(cmd.getOptionValueSource(name) ?? '');
  const p: Record<string, any> = {};
  const set = (path: string, value: unknown) => {
    const keys = path.split('.');
    let at = p;
    for (const k of keys.slice(0, -1)) at = at[k] ??= {};
    at[keys[keys.length - 1]] = value;
  };
  const map: [string, string][] = [
    ['broker', 'broker.url'], ['clientId', 'broker.clientId'], ['username', 'broker.username'], ['password', 'broker.password'], ['maxPacketBytes', 'broker.maxPacketBytes'],
    ['protocolVersion', 'broker.protocolVersion'], ['tlsCa', 'broker.tls.ca'], ['tlsCert', 'broker.tls.cert'], ['tlsKey', 'broker.tls.key'], ['tlsVerify', 'broker.tls.rejectUnauthorized'], ['prefix', 'fleet.prefix'], ['fleet', 'fleet.name'], ['logLevel', 'logging.level'],
    ['nodeId', 'node.id'], ['dataset', 'data.dataset'], ['dataDir', 'data.dataDir'], ['shard', 'data.shard'], ['partition', 'data.partition'],
    ['seed', 'data.seed'], ['maxSamples', 'data.maxSamples'], ['threads', 'training.threads'], ['maxCpuLoad', 'training.maxCpuLoad'], ['stateDir', 'stateDir'],
  ];
  for (const [flag, path] of map) if (given(flag)) set(path, o[flag]);
  return p;
}

/**
 * What the agent says at start about its CSV data: always (info) how many rows were read, kept,
 * dropped and why, values filled, and the rows it trains on; when the labels are names and no
 * data.csv.classes is set, a warning that its class indices are its own.
 */
export function csvDataMessages(ds: CsvDataset, training: number): { info: string; warn?: string } {
  const by = ds.droppedBy;
  const why = [
    by.label && `${by.label} with no label`,
    by.owner && `${by.owner} with no owner`,
    by.feature && `${by.feature} with a missing feature value`,
  ].filter(Boolean);
  let info = `data.csv: ${ds.n + ds.droppedRows} rows read, ${ds.n} kept`;
  info += ds.droppedRows ? `, ${ds.droppedRows} dropped (${why.join(', ')})` : ', none dropped';
  if (ds.imputedValues) info += `; ${ds.imputedValues} missing feature values filled with their column mean`;
  if (training !== ds.n) info += `; training on ${training} of them (data.csv.owner, data.maxSamples)`;
  if (ds.labelKind !== 'names') return { info };
  const shown = ds.classNames.slice(0, 10).map((name, c) => `${name}=${c}`).join(', ');
  const more = ds.classNames.length > 10 ? `, … (${ds.classNames.length} classes)` : '';
  return { info, warn: `data.csv: class indices are this gateway's own sorted label names (${shown}${more}) and differ across gateways unless data.csv.classes is set` };
}

/** The gateway's own data, as its settings describe it. */
export async function loadAgentData(cfg: AgentConfig): Promise<Shard> {
  const d = cfg.data;
  if (d.dataset === 'csv') {
    // The owner column is never a feature; a file without one is fine unless an owner is asked for.
    const ds = await loadCsvDataset(d.csv.file!, {
      label: d.csv.labelColumn, owner: d.csv.ownerColumn, ownerOptional: d.csv.owner === undefined, classes: d.csv.classes, missing: d.csv.missing,
    });
    let rows = Uint32Array.from({ length: ds.n }, (_, i) => i);
    if (d.csv.owner !== undefined) {
      const owner = ds.ownerNames?.indexOf(d.csv.owner) ?? -1;
      if (owner < 0) throw new Error(`data.csv.owner "${d.csv.owner}" does not occur in column ${d.csv.ownerColumn} of ${d.csv.file}`);
      rows = rows.filter((i) => ds.owners![i] === owner);
    }
    if (d.maxSamples) rows = rows.subarray(0, d.maxSamples);
    const log = logger('data');
    const { info, warn } = csvDataMessages(ds, rows.length);
    const fields = { file: d.csv.file, rows: ds.n + ds.droppedRows, kept: ds.n, droppedBy: ds.droppedBy, imputedValues: ds.imputedValues, training: rows.length };
    log.info(fields, info);
    if (warn) log.warn({ file: d.csv.file, classNames: ds.classNames }, warn);
    return select(ds, rows);
  }
  const { index, clients } = parseShard(d.shard);
  return loadShard({ dataset: parseDatasetName(d.dataset), dataDir: d.dataDir, index, clients, partition: d.partition, seed: d.seed, maxSamples: d.maxSamples });
}

/**
 * A simulated gateway must not outlive the simulation that started it, even one killed hard: its
 * IPC channel closes at once; a re-parented process (no channel) is caught by polling.
 */
function watchParent(gone: () => void): void {
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid !== parent) once();
  }, 1000).unref();
  const once = () => {
    clearInterval(timer);
    process.removeListener('disconnect', once);
    gone();
  };
  if (process.connected) process.once('disconnect', once);
}

export function addAgentCommand(program: Command, brokerOptions: (cmd: Command, required: boolean, logLevel?: Option) => Command): void {
  // No default of its own: the agent logs at its logging.level setting (default info), which a given flag overrides.
  const logLevel = logLevelOption('log level (default: logging.level of --config or $FEDGATE_LOG_LEVEL, else info)', null);
  const cmd = tlsOptions(brokerOptions(program.command('agent').description('run one gateway agent: trains on its local data when the aggregator asks'), false, logLevel))
    .option('--config <file>', 'settings file (YAML or JSON; see `fedgate config schema --role agent`); flags override it')
    .option('--node-id <id>', 'this gateway\'s id (one topic level: no + # / or leading $); default: generated once and kept in the state directory')
    .option('--dataset <name>', 'mnist, femnist or csv')
    .option('--data-dir <dir>', 'folder holding femnist/, or the femnist folder itself (default: $FEDGATE_DATA_DIR, else ../shared/data from fedgate\'s folder)')
    .option('--shard <i/n>', 'which part of the data set this gateway holds')
    .option('--partition <spec>', 'how the data set is split over the n shards: iid, dirichlet:<alpha>, or owner (whole FEMNIST writers per shard; n at most the writers)')
    .option('--seed <n>', 'seed of the partition', int(0))
    .option('--max-samples <n>', 'keep at most this many rows of the shard', int(1))
    .option('--threads <n>', 'ONNX Runtime threads', int(1))
    .option('--max-cpu-load <x>', 'throttle training while other processes use more CPU than this (0..1; 1 turns the check off)', positive)
    .addOption(new Option('--protocol-version <v>', 'MQTT protocol version').choices(['4', '5']).argParser((v) => Number(v)))
    .option('--state-dir <dir>', 'state directory (node id, applied config, residual, outbox); default $STATE_DIRECTORY or ./fedgate-state')
    .addOption(new Option('--tier <name>', 'simulation: slow this agent to a device tier').choices(Object.keys(TIERS)))
    .option('--time-scale <x>', 'simulation: simulated seconds per real second for --tier', positive, 1)
    .option('--client-id <id>', 'MQTT client id (default: the node id)')
    .option('--no-profile', 'do not publish a hardware profile or run the host guard')
    .addOption(new Option('--exit-with-parent', 'stop when the process that started this agent is gone (simulate)').hideHelp());
  /** Defaults under the environment, held to the same rules as with --config: bad values refused, unknown names warned of. */
  const fromEnvironment = (log: ReturnType<typeof logger>): AgentConfig => {
    const env = envOverrides('agent');
    for (const w of env.warnings) log.warn(w);
    if (env.errors.length) throw new ConfigError(env.errors);
    return validateConfig(mergeConfig(defaultConfig('agent'), env.partial), 'agent');
  };
  cmd.action(async (o: Opts) => {
    const log = logger('cli');
    const base = o.config ? await loadConfigFile(o.config, 'agent') : fromEnvironment(log);
    const cfg = validateConfig(mergeConfig(base, flagsToPartial(cmd, o)), 'agent');
    setLogLevel(cfg.logging.level);
    // Unresolved: StateDir.open resolves it (stateDir, else $STATE_DIRECTORY, else ./fedgate-state) and names the source in its errors.
    const state = await StateDir.open({ dir: cfg.stateDir });
    try {
      const { id, source } = await state.nodeId(cfg.node.id);
      // The data settings as the agent will run with them: with any applied over MQTT before the last restart.
      const data = await loadAgentData((await restoredConfig(cfg, state)).config);
      const agent = new Agent({
        config: cfg, nodeId: id, data, state, profile: o.profile, session: await state.nextSession(),
        emulation: o.tier ? { tier: TIERS[o.tier], timeScale: o.timeScale } : undefined,
        tls: loadTls(cfg.broker.tls),
      });
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) process.exit(130);
        stopping = true;
        log.info({ signal }, 'stopping');
        agent.stop().then(() => process.exit(0), (err) => {
          log.error({ err: (err as Error).message }, 'error while stopping');
          process.exit(1);
        });
      };
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
      if (o.exitWithParent) watchParent(() => stop('parent gone'));
      log.info({ node: id, idSource: source }, 'starting agent');
      await agent.start();
      // Until the node leaves the fleet on request, or another agent takes its node id: that error
      // (exit status 78, which systemd does not restart) goes to the CLI's handler like any other.
      await agent.leftFleet;
      log.info('left the fleet on request');
      process.exit(0);
    } catch (err) {
      await state.close();
      throw err;
    }
  });
}
