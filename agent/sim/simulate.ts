import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { DeviceTier } from './tiers';
import { parsePartition } from '../data';
import { startEmbeddedBroker, type EmbeddedBroker } from '../broker';
import mqtt from 'mqtt';
import { logger, type Logger } from '../log';
import { Topics } from '../transport';
import { checkJobFiles, runAggregatorJob, type JobOptions, type JobReport } from './job';
import type { RoundRecord } from '../aggregator';

export interface SimulateOptions extends Omit<JobOptions, 'url' | 'minClients'> {
  /** Use this broker instead of starting the embedded one. */
  broker?: string;
  clients: number;
  partition: string;
  logLevel: string;
  /** Cap on each gateway's training rows. */
  maxSamples?: number;
  /** Real-time device emulation: each gateway slowed to its tier, `timeScale` times faster than the real device. */
  tiers?: DeviceTier[];
  timeScale?: number;
}

/** The compiled CLI, which every simulated gateway runs as its own OS process. */
function cliScript(): string {
  const here = __filename.endsWith('.ts') ? path.resolve(__dirname, '../../dist/agent/sim') : __dirname;
  return path.resolve(here, '../cli/main.js');
}

/** A fleet name of its own for a simulation on a shared broker: its gateways never meet real ones. */
export function simFleetName(): string {
  return `sim-${randomBytes(4).toString('hex')}`;
}

export function nodeIdFor(i: number, clients: number): string {
  return `gw-${String(i).padStart(String(clients - 1).length, '0')}`;
}

/**
 * A whole fleet on one machine: the embedded broker (unless one is given), the aggregator in this
 * process, and one OS process per gateway, each with its own MQTT connection and its own data shard.
 */
export async function simulate(opts: SimulateOptions, onRound: (r: RoundRecord) => void = () => undefined): Promise<JobReport> {
  const log = logger('simulate');
  parsePartition(opts.partition); // refuse a bad spec here, before ten processes each refuse it
  if (!Number.isInteger(opts.clients) || opts.clients < 1) throw new Error(`--clients must be a whole number ≥ 1, got ${opts.clients}`);
  opts.signal?.throwIfAborted();
  const done = await checkJobFiles(opts);
  if (done) return done;
  let broker: EmbeddedBroker | undefined;
  const url = opts.broker ?? (broker = await startEmbeddedBroker()).url;
  const children: ChildProcess[] = [];
  // Each gateway keeps its own state directory (node id, outbox, residual), as on a real device.
  const stateRoot = mkdtempSync(path.join(tmpdir(), 'fedgate-sim-'));
  const exited = new Set<ChildProcess>();
  let failure: Error | undefined;
  try {
    const report = await runAggregatorJob({ ...opts, url, minClients: opts.clients }, onRound, (aggregator) => {
      for (let i = 0; i < opts.clients; i++) {
        const args = [
          cliScript(), 'agent',
          '--broker', url,
          '--node-id', nodeIdFor(i, opts.clients),
          '--prefix', opts.prefix,
          '--fleet', opts.fleet,
          '--dataset', opts.dataset,
          '--shard', `${i}/${opts.clients}`,
          '--partition', opts.partition,
          '--seed', String(opts.seed),
          '--log-level', opts.logLevel,
          '--state-dir', path.join(stateRoot, nodeIdFor(i, opts.clients)),
          // All gateways share this host: each would see the others' training as the host's own work.
          '--max-cpu-load', '1',
          // On a shared broker a client id equal to a real gateway's node id would knock it off.
          '--client-id', `fedgate-sim-${process.pid}-${nodeIdFor(i, opts.clients)}`,
          '--exit-with-parent',
        ];
        const tier = opts.tiers?.[i];
        if (tier) args.push('--tier', tier.name, '--time-scale', String(opts.timeScale ?? 1));
        if (opts.dataDir) args.push('--data-dir', opts.dataDir);
        if (opts.maxSamples) args.push('--max-samples', String(opts.maxSamples));
        if (opts.maxPacketBytes) args.push('--max-packet-bytes', String(opts.maxPacketBytes));
        if (opts.username) args.push('--username', opts.username);
        const env: NodeJS.ProcessEnv = { ...process.env, ...(opts.password ? { FEDGATE_MQTT_PASSWORD: opts.password } : {}) };
        // systemd's notification socket is for simulate itself: a gateway saying READY=1 would be refused.
        delete env.NOTIFY_SOCKET;
        delete env.WATCHDOG_USEC;
        delete env.WATCHDOG_PID;
        // The IPC channel is how a gateway notices this process is gone, even killed hard.
        const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], env });
        child.on('exit', (code, signal) => {
          exited.add(child);
          if (code !== 0 && signal === null && !failure) {
            // A gateway that cannot start (bad data, bad settings) fails the whole simulation at once,
            // instead of leaving the aggregator waiting for it.
            failure = new Error(`gateway ${nodeIdFor(i, opts.clients)} exited with code ${code} (its error is printed above)`);
            log.error(failure.message);
            void aggregator.stop();
          }
        });
        children.push(child);
      }
    }).catch((err: Error) => {
      throw failure ?? err; // the gateway's failure is the cause of whatever the cut-short job reports
    });
    if (failure) throw failure;
    return report;
  } finally {
    const killed = (await Promise.all(children.map((c) => stopChild(c, exited)))).some(Boolean);
    // A gateway killed outright leaves the broker its last will to publish (retained) once it sees
    // the connection gone: clear after that, not before.
    if (opts.broker) {
      if (killed) await sleep(1000);
      await clearRetained(opts, log);
    }
    await broker?.close();
    rmSync(stateRoot, { recursive: true, force: true });
  }
}

/**
 * On a shared broker, the simulated fleet's retained topics (its aggregator's state, its gateways'
 * offline states and profiles) would outlive it, one set per run: cleared once everyone is gone.
 */
async function clearRetained(opts: SimulateOptions, log: Logger): Promise<void> {
  const topics = new Topics(opts.prefix, opts.fleet);
  const retained = [topics.aggregatorState];
  for (let i = 0; i < opts.clients; i++) retained.push(topics.nodeState(nodeIdFor(i, opts.clients)), topics.nodeProfile(nodeIdFor(i, opts.clients)));
  let client: mqtt.MqttClient | undefined;
  try {
    client = await mqtt.connectAsync(opts.broker!, { username: opts.username, password: opts.password, reconnectPeriod: 0, connectTimeout: 5000 });
    await Promise.all(retained.map((t) => client!.publishAsync(t, '', { qos: 1, retain: true })));
  } catch (err) {
    log.warn({ err: (err as Error).message, fleet: topics.base }, 'retained state of the simulated fleet not cleared');
  } finally {
    await client?.endAsync().catch(() => undefined);
  }
}

/** Stops a gateway (SIGTERM, SIGKILL after 5 s); true if it had to be killed. */
async function stopChild(child: ChildProcess, exited: Set<ChildProcess>): Promise<boolean> {
  if (exited.has(child) || child.exitCode !== null) return false;
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  let killed = false;
  const timer = setTimeout(() => { killed = true; child.kill('SIGKILL'); }, 5000);
  await gone;
  clearTimeout(timer);
  return killed;
}
