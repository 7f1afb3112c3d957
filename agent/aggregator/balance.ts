/**
 * Workload balancing: pure functions that decide, each round, who trains and how much.
 *
 * - Expected time of a task on a node = download + compute + upload, from what the aggregator has
 *   observed of that node (EWMA of past rounds), else its published profile, else the fleet median.
 * - Target round duration: a quantile of the eligible nodes' times for full work (the configured
 *   epochs over their data), so the fleet's slow tail no longer sets the pace.
 * - Selection (after Oort, Lai et al. OSDI'21): statistical utility (samples × recent loss) times a
 *   penalty (T/tᵢ)^α for nodes expected to overrun the target; a share of slots for exploring
 *   untried or stale nodes; any eligible node idle for more than `maxIdleRounds` is taken first.
 * - Work sizing: each participant's steps fit its expected finish inside the target — fast
 *   gateways do their full epochs, slow ones fewer, never more than their data allows.
 */
import { createRng } from '../data';
import type { NodeInfo } from './fleet';

export interface NodeHistory {
  timesSelected: number;
  /** Last round the node was asked to train (0: never). */
  lastSelected: number;
  /** Last round the node returned a result. */
  lastResult: number;
  lastLoss?: number;
  /** Observed training samples per second (EWMA). */
  samplesPerSecond?: number;
  /** Observed seconds spent outside training per task: transfers, queueing, encoding (EWMA). */
  overheadSeconds?: number;
  late: number;
}

export interface BalanceOptions {
  /** Results wanted per round (K). */
  clientsPerRound: number;
  /** Select this many times K; the round closes at K results (over-commitment). */
  overcommit: number;
  /** Full local work: epochs over the node's data. */
  epochs: number;
  batchSize: number;
  /** Quantile of the eligible nodes' full-work times used as the round's target duration. */
  targetQuantile: number;
  /** Deadline = target × (1 + slack). */
  deadlineSlack: number;
  /**
   * Longest target: the caller's cap on the deadline ÷ (1 + slack). Work is sized to the target, so
   * a cap below the quantile (slow devices, a short `--deadline`) shrinks the work instead of
   * sending tasks that cannot finish in time.
   */
  maxTargetSeconds?: number;
  /** Exponent of the penalty for nodes slower than the target. */
  slowPenalty: number;
  /** Share of the slots kept for untried or long-unselected nodes. */
  exploration: number;
  /** An eligible node is not left out for more than this many rounds in a row (0: 3 × fleet / slots). */
  maxIdleRounds: number;
  /** Least work given to a selected node, in epochs (at least one batch). */
  minEpochs: number;
  /** Bytes of the model each task downloads, and of a typical update it uploads. */
  modelBytes: number;
  updateBytes: number;
  /** Availability limits, a second line of defence behind each node's own host guard. */
  maxTemperatureC: number;
  minBatteryPercent: number;
  seed: number;
}

export const DEFAULT_BALANCE: Omit<BalanceOptions, 'clientsPerRound' | 'epochs' | 'batchSize' | 'modelBytes' | 'updateBytes' | 'seed'> = {
  overcommit: 1.3,
  targetQuantile: 0.5,
  deadlineSlack: 0.25,
  slowPenalty: 2,
  exploration: 0.2,
  maxIdleRounds: 0,
  minEpochs: 0.25,
  maxTemperatureC: 85,
  minBatteryPercent: 20,
};

const FALLBACK_SAMPLES_PER_SECOND = 2000;

export interface NodeEstimate {
  samplesPerSecond: number;
  commSeconds: number;
  /** Seconds for the full work (epochs over all its data). */
  fullSeconds: number;
  fullSteps: number;
  known: boolean;
}

/** Why a node may not train now, or undefined when it may. */
export function unavailableReason(n: NodeInfo, o: Pick<BalanceOptions, 'maxTemperatureC' | 'minBatteryPercent'>): string | undefined {
  if (!n.online) return 'offline';
  if (n.samples <= 0) return 'no data';
  // The node's own host guard judges CPU load against its own settings and reports busy; the
  // aggregator does not second-guess it (gateways sharing a host would all look overloaded).
  if (n.busy) return 'busy with its host\'s own work';
  const p = n.profile;
  if (p?.temperatureC != null && p.temperatureC > o.maxTemperatureC) return `temperature ${p.temperatureC} °C above ${o.maxTemperatureC}`;
  if (p?.onBattery && p.batteryPercent != null && p.batteryPercent < o.minBatteryPercent) return `battery at ${p.batteryPercent}%`;
  return undefined;
}

function median(xs: number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Linear-interpolated quantile q ∈ [0, 1] of xs. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) throw new RangeError('quantile of nothing');
  const s = [...xs].sort((a, b) => a - b);
  const pos = Math.min(1, Math.max(0, q)) * (s.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

export function stepsPerEpoch(samples: number, batchSize: number): number {
  return Math.max(1, Math.ceil(samples / batchSize));
}

/** Expected speeds and full-work time of each node, from history, else profile, else the fleet median. */
export function estimateNodes(nodes: readonly NodeInfo[], history: ReadonlyMap<string, NodeHistory>, o: Pick<BalanceOptions, 'epochs' | 'batchSize' | 'modelBytes' | 'updateBytes'>): Map<string, NodeEstimate> {
  const sps = (n: NodeInfo) => history.get(n.id)?.samplesPerSecond ?? n.profile?.trainSamplesPerSecond ?? undefined;
  const comm = (n: NodeInfo) => {
    const h = history.get(n.id)?.overheadSeconds;
    if (h !== undefined) return h;
    const down = n.profile?.downBytesPerSecond;
    const up = n.profile?.upBytesPerSecond;
    if (down == null && up == null) return undefined;
    return (down ? o.modelBytes / down : 0) + (up ? o.updateBytes / up : 0);
  };
  const medianSps = median(nodes.map(sps).filter((x): x is number => x !== undefined && x > 0)) ?? FALLBACK_SAMPLES_PER_SECOND;
  const medianComm = median(nodes.map(comm).filter((x): x is number => x !== undefined && x >= 0)) ?? 0;
  const out = new Map<string, NodeEstimate>();
  for (const n of nodes) {
    const s = sps(n);
    const c = comm(n);
    const samplesPerSecond = s !== undefined && s > 0 ? s : medianSps;
    const commSeconds = c !== undefined && c >= 0 ? c : medianComm;
    const fullSteps = stepsPerEpoch(n.samples, o.batchSize) * o.epochs;
    out.set(n.id, { samplesPerSecond, commSeconds, fullSteps, fullSeconds: commSeconds + (fullSteps * o.batchSize) / samplesPerSecond, known: s !== undefined });
  }
  return out;
}

/** Steps that fit in `seconds` on a node, between the minimum work and its full work. */
export function sizeWork(est: NodeEstimate, seconds: number, samples: number, o: Pick<BalanceOptions, 'batchSize' | 'minEpochs'>): number {
  const fit = Math.floor(((seconds - est.commSeconds) * est.samplesPerSecond) / o.batchSize);
  const least = Math.max(1, Math.ceil(stepsPerEpoch(samples, o.batchSize) * o.minEpochs));
  return Math.max(Math.min(least, est.fullSteps), Math.min(est.fullSteps, fit));
}

export interface SelectionScore {
  node: string;
  score: number;
  reason: 'fairness' | 'exploration' | 'utility';
}

/**
 * Chooses `count` nodes among the eligible ones: first those idle for too long (fairness), then a
 * share of untried/stale nodes (exploration), then by utility. Deterministic for a seed and round.
 */
export function selectNodes(eligible: readonly NodeInfo[], est: ReadonlyMap<string, NodeEstimate>, history: ReadonlyMap<string, NodeHistory>, round: number, count: number, target: number, o: Pick<BalanceOptions, 'slowPenalty' | 'exploration' | 'maxIdleRounds' | 'seed'>): SelectionScore[] {
  if (count >= eligible.length) return eligible.map((n) => ({ node: n.id, score: utility(n, est.get(n.id)!, history.get(n.id), target, o.slowPenalty), reason: 'utility' as const }));
  const rng = createRng((o.seed * 2654435761 + round * 40503) >>> 0);
  const chosen: SelectionScore[] = [];
  const taken = new Set<string>();
  const take = (n: NodeInfo, score: number, reason: SelectionScore['reason']) => {
    chosen.push({ node: n.id, score, reason });
    taken.add(n.id);
  };
  // Fairness: longest-idle first. A node never selected counts as idle since round 0.
  const idle = eligible
    .filter((n) => round - (history.get(n.id)?.lastSelected ?? 0) > o.maxIdleRounds)
    .sort((a, b) => (history.get(a.id)?.lastSelected ?? 0) - (history.get(b.id)?.lastSelected ?? 0) || (a.id < b.id ? -1 : 1));
  for (const n of idle) if (chosen.length < count) take(n, 0, 'fairness');
  // Exploration: nodes never asked yet, fastest expected first, ties broken at random. (A node that
  // was asked and came back late is not "untried": it has told us it is slow.)
  const explore = Math.min(count - chosen.length, Math.round(count * o.exploration));
  const untried = eligible.filter((n) => !taken.has(n.id) && !history.get(n.id)?.timesSelected);
  const keyed = untried.map((n) => ({ n, t: est.get(n.id)!.fullSeconds, r: rng.next() }));
  keyed.sort((a, b) => a.t - b.t || a.r - b.r);
  for (const { n } of keyed.slice(0, explore)) take(n, 0, 'exploration');
  // Utility, with a little seeded noise so equal scores do not always favour the same nodes.
  const rest = eligible.filter((n) => !taken.has(n.id)).map((n) => ({ n, s: utility(n, est.get(n.id)!, history.get(n.id), target, o.slowPenalty) * (0.95 + 0.1 * rng.next()) }));
  rest.sort((a, b) => b.s - a.s);
  for (const { n, s } of rest) if (chosen.length < count) take(n, s, 'utility');
  return chosen;
}

/** Oort-style utility: statistical (samples × loss) times a penalty for expected overrun of the target. */
export function utility(n: NodeInfo, e: NodeEstimate, h: NodeHistory | undefined, target: number, alpha: number): number {
  const loss = h?.lastLoss !== undefined && Number.isFinite(h.lastLoss) ? h.lastLoss : 1;
  const stat = n.samples * Math.max(loss, 1e-6);
  const t = e.fullSeconds;
  return t > target ? stat * Math.pow(target / t, alpha) : stat;
}

export interface BalancedTask {
  node: string;
  steps: number;
  expectedSeconds: number;
  score: number;
  reason: SelectionScore['reason'];
}

export interface BalancedPlan {
  tasks: BalancedTask[];
  targetSeconds: number;
  deadlineSeconds: number;
  closeAfter: number;
  skipped: { node: string; reason: string }[];
}

/** The whole planning step: availability, target, selection with over-commitment, work sizing. */
export function planBalancedRound(round: number, fleet: readonly NodeInfo[], history: ReadonlyMap<string, NodeHistory>, o: BalanceOptions): BalancedPlan {
  const skipped: { node: string; reason: string }[] = [];
  const eligible: NodeInfo[] = [];
  for (const n of fleet) {
    const why = unavailableReason(n, o);
    if (why) skipped.push({ node: n.id, reason: why });
    else eligible.push(n);
  }
  if (eligible.length === 0) return { tasks: [], targetSeconds: 0, deadlineSeconds: 0, closeAfter: 0, skipped };
  const est = estimateNodes(eligible, history, o);
  const target = Math.min(quantile(eligible.map((n) => est.get(n.id)!.fullSeconds), o.targetQuantile), o.maxTargetSeconds ?? Infinity);
  const k = o.clientsPerRound > 0 ? Math.min(o.clientsPerRound, eligible.length) : eligible.length;
  const count = Math.min(eligible.length, Math.ceil(k * o.overcommit));
  const maxIdleRounds = o.maxIdleRounds > 0 ? o.maxIdleRounds : Math.ceil((3 * eligible.length) / count);
  const selected = selectNodes(eligible, est, history, round, count, target, { ...o, maxIdleRounds });
  const tasks = selected.map((s) => {
    const n = eligible.find((x) => x.id === s.node)!;
    const e = est.get(s.node)!;
    const steps = sizeWork(e, target, n.samples, o);
    return { node: s.node, steps, expectedSeconds: e.commSeconds + (steps * o.batchSize) / e.samplesPerSecond, score: s.score, reason: s.reason };
  });
  return { tasks, targetSeconds: target, deadlineSeconds: target * (1 + o.deadlineSlack), closeAfter: Math.min(k, tasks.length), skipped };
}

/** Folds one round's observation of a node into its history (EWMA, alpha 0.5: recent rounds dominate, one outlier does not). */
export function observe(h: NodeHistory | undefined, obs: { round: number; selected: boolean; result?: { steps: number; batchSize: number; trainSeconds: number; elapsedSeconds: number; loss: number }; late?: { steps: number; batchSize: number; deadlineSeconds: number } }): NodeHistory {
  const next: NodeHistory = h ? { ...h } : { timesSelected: 0, lastSelected: 0, lastResult: 0, late: 0 };
  const ewma = (prev: number | undefined, x: number) => (prev === undefined ? x : 0.5 * prev + 0.5 * x);
  if (obs.selected) {
    next.timesSelected++;
    next.lastSelected = obs.round;
  }
  if (obs.late) {
    next.late++;
    // It did not finish `steps` within the deadline, so it trains slower than steps·batch/deadline:
    // cap the estimate there (with margin), or the planner keeps giving it work it cannot finish.
    const bound = (obs.late.steps * obs.late.batchSize) / obs.late.deadlineSeconds;
    if (bound > 0 && Number.isFinite(bound)) next.samplesPerSecond = Math.min(next.samplesPerSecond ?? Infinity, 0.7 * bound);
  }
  const r = obs.result;
  if (r) {
    next.lastResult = obs.round;
    if (Number.isFinite(r.loss)) next.lastLoss = r.loss;
    if (r.trainSeconds > 0 && r.steps > 0) next.samplesPerSecond = ewma(next.samplesPerSecond, (r.steps * r.batchSize) / r.trainSeconds);
    const overhead = r.elapsedSeconds - r.trainSeconds;
    if (Number.isFinite(overhead) && overhead >= 0) next.overheadSeconds = ewma(next.overheadSeconds, overhead);
  }
  return next;
}
