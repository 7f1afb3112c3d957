import { partition, partitionByOwner, parsePartition } from '../data';
import { paramCount } from '../model';
import { buildStrategy, writeOutput, type JobOptions } from './job';
import { defaultSpec, loadSplit, type DatasetName } from './datasets';
import { availabilityWindows, loadTrace, parseTierMix, type Device } from './tiers';
import { runVirtual, type VirtualIdle, type VirtualRound } from './virtual';

export interface VirtualJobOptions extends Pick<JobOptions, 'strategy' | 'codec' | 'clientsPerRound' | 'epochs' | 'batchSize' | 'lr' | 'deadlineSeconds' | 'seed' | 'overcommit' | 'targetQuantile' | 'maxIdleRounds' | 'foldLate' | 'hidden' | 'rounds' | 'report'> {
  dataset: DatasetName;
  dataDir?: string;
  clients: number;
  partition: string;
  tiers?: string;
  trace?: string;
  timeBudgetSeconds?: number;
  /** Cap on each device's rows, as `--max-samples` caps a gateway's in processes mode. */
  maxSamples?: number;
}

/**
 * `fedgate simulate --mode virtual`: a large fleet on a virtual clock. `onNote` gets the lines that
 * are not rounds (a stretch with no device online, the end of the run for want of one).
 */
export async function runVirtualJob(o: VirtualJobOptions, onRound: (r: VirtualRound) => void, onNote: (line: string) => void = (l) => void process.stdout.write(l + '\n')): Promise<{ rounds: VirtualRound[]; idle: VirtualIdle[]; config: Record<string, unknown> }> {
  // The CLI lets both through; the trace would silently win.
  if (o.trace && o.tiers) throw new Error(`--trace and --tiers: give one, not both (the trace ${o.trace} names each device and its figures; --tiers draws --clients devices from the built-in tiers)`);
  const train = loadSplit({ dataset: o.dataset, dataDir: o.dataDir }, 'train');
  const test = loadSplit({ dataset: o.dataset, dataDir: o.dataDir }, 'test');
  const spec = defaultSpec(test, o.hidden);
  let devices: Device[];
  if (o.trace) {
    devices = loadTrace(o.trace);
  } else {
    devices = parseTierMix(o.tiers ?? 'pi3,pi4,jetson,x86', o.clients, o.seed).map((tier, i) => ({ id: `dev-${String(i).padStart(String(o.clients - 1).length, '0')}`, tier, windows: availabilityWindows(tier, 1e7, o.seed * 1000 + i) }));
  }
  const spec2 = parsePartition(o.partition);
  if (spec2.kind === 'owner' && train.owners) {
    const owners = partitionByOwner(train.owners).length;
    if (devices.length > owners) throw new Error(`--partition owner: ${o.trace ? `the ${devices.length} devices of --trace are` : `--clients ${devices.length} is`} more than the ${owners} writers of ${o.dataset} (each device holds whole writers); use at most ${owners}`);
  }
  const shards = partition(train, spec2, devices.length, o.seed).map((s) => (o.maxSamples && o.maxSamples < s.length ? s.subarray(0, o.maxSamples) : s));
  const strategy = buildStrategy({ ...o, clientsPerRound: o.clientsPerRound || Math.max(1, Math.round(devices.length / 10)) }, paramCount(spec));
  const res = await runVirtual({ spec, train, test, devices, shards, strategy, rounds: o.rounds, timeBudgetSeconds: o.timeBudgetSeconds, seed: o.seed, foldLate: o.foldLate, onRound, onIdle: (i) => onNote(formatVirtualIdle(i)) });
  // As runAggregatorJob: a run no device took part in must not pass for one (its "model" is the untrained one).
  const ran = res.rounds.length;
  const check = `check ${o.trace ? `the devices' availability windows in ${o.trace}` : '--tiers'}`;
  if (ran === 0 && res.idle.length > 0) throw new Error(`no device was online before the run ended: ${check} (no report written)`);
  if (ran > 0 && res.rounds.every((r) => r.participants === 0)) throw new Error(`no device took part in ${ran === 1 ? 'the round' : `any of the ${ran} rounds`}: ${check} and --deadline (no report written)`);
  // Virtual mode keeps no model or checkpoint and talks to no broker: those settings (the CLI's
  // defaults among them, and a password from the environment) do not belong in its report.
  const { modelOut: _m, checkpoint: _c, resume: _r, fresh: _f, prefix: _p, fleet: _fl, username: _u, password: _pw, maxPacketBytes: _mp, ...kept } = o as VirtualJobOptions & Partial<Record<'modelOut' | 'checkpoint' | 'resume' | 'fresh' | 'prefix' | 'fleet' | 'username' | 'password' | 'maxPacketBytes', unknown>>;
  const config = { ...kept, mode: 'virtual', devices: devices.length, model: spec };
  if (o.report) await writeOutput(o.report, Buffer.from(JSON.stringify({ config, rounds: res.rounds, final: { accuracy: res.rounds.at(-1)?.accuracy, loss: res.rounds.at(-1)?.loss } }, null, 2) + '\n'));
  return { rounds: res.rounds, idle: res.idle, config };
}

/** The line for a stretch the clock skipped because no device was online. */
export function formatVirtualIdle(i: VirtualIdle): string {
  const from = `idle from t=${i.from.toFixed(1)} s`;
  if (i.until === 'online') return `${from} to t=${i.to!.toFixed(1)} s: no device online`;
  if (i.until === 'budget') return `${from} to t=${i.to!.toFixed(1)} s (the time budget's end): no device online before it; the run ends`;
  return `${from}: no device comes online again; the run ends`;
}

/** `rounds` Infinity: no round limit (a time budget ends the run), so no "/<rounds>". */
export function formatVirtualRound(r: VirtualRound, rounds: number): string {
  const steps = r.tasks.map((t) => t.steps);
  const late = r.tasks.filter((t) => t.late);
  const failed = r.tasks.filter((t) => t.failed).length;
  return [
    Number.isFinite(rounds) ? `round ${String(r.round).padStart(String(rounds).length)}/${rounds}` : `round ${r.round}`,
    `t=${r.end.toFixed(1)} s`,
    `participants ${r.participants}/${r.selected}`,
    steps.length ? `work ${Math.min(...steps)}-${Math.max(...steps)} steps` : 'work -',
    `acc ${r.accuracy.toFixed(4)}`,
    `loss ${r.loss.toFixed(4)}`,
    `deadline ${r.deadlineSeconds === Infinity ? '-' : r.deadlineSeconds.toFixed(1) + ' s'}`,
    `straggler wait ${r.stragglerWaitSeconds.toFixed(1)} s`,
    ...(late.length ? [`late ${late.length} (${late.map((t) => t.node).join(',')})`] : []),
    ...(failed ? [`offline ${failed}`] : []),
  ].join('  ');
}
