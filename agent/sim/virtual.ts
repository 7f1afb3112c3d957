import { select, type Dataset, type Shard } from '../data';
import { initParams, paramCount, type ModelSpec } from '../model';
import { Trainer } from '../train';
import { encode, decode } from '../compress';
import { FRAME_HEADER_BYTES, type CodecChoice } from '../transport';
import type { ClientUpdate, NodeInfo, RoundFailure, Strategy } from '../aggregator';
import { createRng } from '../data';
import { onlineThrough, isOnline, nextOnline, trainFlopsPerSample, type Device } from './tiers';

/**
 * A fleet on a virtual clock: real training (ONNX Runtime, real codecs, the same Strategy code as
 * the real aggregator), simulated time. A task's time is download + compute + upload from its
 * device's model: compute from the samples it processes and the device's FLOP rate, transfers from
 * bytes and bandwidth, plus latency. A device that goes offline during its task loses it. When no
 * device (with data) is online, the clock jumps to the next time one is, with no round in between.
 */
export interface VirtualOptions {
  spec: ModelSpec;
  train: Dataset;
  test: Dataset;
  devices: Device[];
  shards: Uint32Array[];
  strategy: Strategy;
  /** Stop after this many rounds or this much simulated time, whichever first. */
  rounds: number;
  timeBudgetSeconds?: number;
  seed: number;
  /** Parallel ONNX Runtime workers (one per core). */
  workers?: number;
  /** Simulated seconds the aggregator spends per round (aggregation, evaluation, sending). */
  serverSecondsPerRound?: number;
  /** Multiplicative error of the devices' self-measured profiles (0.15 = ±15 %). */
  profileNoise?: number;
  /** Fold updates that arrive after their round closed into the next round (staleness-weighted). */
  foldLate?: boolean;
  onRound?: (r: VirtualRound) => void;
  /** A stretch with no device online that the clock skipped (no round, no evaluation). */
  onIdle?: (i: VirtualIdle) => void;
}

/**
 * No device with data online from `from`: the clock jumped to `to`, when one comes online
 * (`until: 'online'`), or to the time budget's end (`'budget'`: none does before it), or the run
 * ended there for good (`'never'`: none ever does again; `to` undefined).
 */
export interface VirtualIdle {
  from: number;
  to?: number;
  until: 'online' | 'budget' | 'never';
}

export interface VirtualTask {
  node: string;
  tier: string;
  /** Steps assigned, and done: fewer when the device stopped at its deadline with partial work. */
  steps: number;
  stepsDone: number;
  expectedSeconds?: number;
  /** Simulated seconds from the round's start to the update's arrival (or to the failure). */
  actualSeconds: number;
  late: boolean;
  failed?: string;
  reason?: string;
}

export interface VirtualRound {
  round: number;
  start: number;
  end: number;
  participants: number;
  selected: number;
  accuracy: number;
  loss: number;
  /** Mean over the used updates of the time their node waited for the round to close. */
  stragglerWaitSeconds: number;
  bytesUp: number;
  bytesDown: number;
  deadlineSeconds: number;
  tasks: VirtualTask[];
}

interface Pending {
  node: string;
  round: number;
  arrival: number;
  update: ClientUpdate;
}

export async function runVirtual(o: VirtualOptions): Promise<{ rounds: VirtualRound[]; idle: VirtualIdle[]; params: Float32Array }> {
  const n = paramCount(o.spec);
  const flopsPerSample = trainFlopsPerSample(n);
  const modelBytes = n * 4 + FRAME_HEADER_BYTES + 400;
  const pool = await Promise.all(Array.from({ length: o.workers ?? 2 }, () => Trainer.create(o.spec, { threads: 1 })));
  const evaluator = pool[0];
  const shards: Shard[] = o.shards.map((idx) => select(o.train, idx));
  const testShard = select(o.test, Uint32Array.from({ length: o.test.n }, (_, i) => i));
  const noise = createRng(o.seed ^ 0x5eed);
  const profileError = o.devices.map(() => 1 + (o.profileNoise ?? 0.15) * (2 * noise.next() - 1));
  const sizeCache = new Map<string, number>();
  const updateBytes = (c: CodecChoice) => {
    const key = JSON.stringify(c);
    if (!sizeCache.has(key)) sizeCache.set(key, encode(new Float32Array(n), { ...c, seed: 0 }).length + FRAME_HEADER_BYTES + 300);
    return sizeCache.get(key)!;
  };
  const byId = new Map(o.devices.map((d, i) => [d.id, i]));
  let params = initParams(o.spec, o.seed);
  let now = 0;
  const rounds: VirtualRound[] = [];
  const idle: VirtualIdle[] = [];
  let pendingLate: Pending[] = [];
  // A device without data is never asked (no strategy plans for it), so it does not count as available.
  const usable = o.devices.filter((_, i) => shards[i].n > 0);
  const budget = o.timeBudgetSeconds ?? Infinity;
  try {
    let round = 1;
    while (round <= o.rounds && now < budget) {
      if (!usable.some((d) => isOnline(d, now))) {
        // Nothing can happen until a device comes online: an empty round per 0.5 s would crawl
        // through a night offline (and evaluate an unchanged model each time).
        const next = Math.min(...usable.map((d) => nextOnline(d, now) ?? Infinity));
        const gap: VirtualIdle = next === Infinity ? { from: now, until: 'never' } : next >= budget ? { from: now, to: budget, until: 'budget' } : { from: now, to: next, until: 'online' };
        idle.push(gap);
        o.onIdle?.(gap);
        if (gap.until !== 'online') break;
        now = next;
        continue;
      }
      const fleet: NodeInfo[] = o.devices.map((d, i) => ({
        id: d.id,
        online: isOnline(d, now),
        session: 1,
        samples: shards[i].n,
        busy: false,
        lastSeen: now,
        profile: {
          trainSamplesPerSecond: ((d.tier.gflops * 1e9) / flopsPerSample) * profileError[i],
          upBytesPerSecond: d.tier.upBytesPerSecond * profileError[i],
          downBytesPerSecond: d.tier.downBytesPerSecond * profileError[i],
        },
      }));
      // As the real aggregator does: a strategy plans over the live nodes only (an offline device
      // is not heard from). Plain FedAvg was offered offline devices here and lost its picks to them.
      const plan = o.strategy.plan(round, fleet.filter((n) => n.online));
      const closeAfter = plan.closeAfter ?? plan.tasks.length;
      // Simulated outcome of every task.
      const outcomes = plan.tasks.map((t) => {
        const i = byId.get(t.node)!;
        const d = o.devices[i];
        const down = d.tier.latencySeconds + modelBytes / d.tier.downBytesPerSecond;
        const upBytes = updateBytes(t.codec);
        const up = d.tier.latencySeconds + upBytes / d.tier.upBytesPerSecond;
        // As the real agent does: train until 0.9 of the deadline less the upload, then send the
        // partial work (at least one step) rather than nothing. The real aggregator waits a grace
        // for the upload after the deadline; this one does not, so the download counts too.
        const stepSeconds = (t.batchSize * flopsPerSample) / (d.tier.gflops * 1e9);
        const fits = Math.floor((0.9 * plan.deadlineSeconds - down - up) / stepSeconds);
        const stepsDone = Math.max(1, Math.min(t.steps, fits));
        const compute = stepsDone * stepSeconds;
        const total = down + compute + up;
        let failedAt: number | undefined;
        if (!onlineThrough(d, now, now + total)) {
          const w = d.windows!.find(([s, e]) => s <= now && now < e);
          failedAt = w ? w[1] - now : 0;
        }
        return { t, i, d, stepsDone, compute, total, upBytes, failedAt };
      });
      // The round closes at the closeAfter-th arrival, when every task has settled, or at the deadline.
      const arrivals = outcomes.filter((x) => x.failedAt === undefined).map((x) => x.total).sort((a, b) => a - b);
      const settleAll = Math.max(0, ...outcomes.map((x) => x.failedAt ?? x.total));
      let close = Math.min(plan.deadlineSeconds, settleAll);
      if (arrivals.length >= closeAfter && closeAfter > 0) close = Math.min(close, arrivals[closeAfter - 1]);
      const used = outcomes.filter((x) => x.failedAt === undefined && x.total <= close);
      const late = outcomes.filter((x) => x.failedAt === undefined && x.total > close);
      // Real training, only for the updates that will be used (or folded later).
      const toTrain = o.foldLate ? [...used, ...late] : used;
      const updates = new Map<string, ClientUpdate>();
      let next = 0;
      await Promise.all(pool.map(async (trainer) => {
        while (next < toTrain.length) {
          const x = toTrain[next++];
          const shard = shards[x.i];
          await trainer.setData(shard.x, shard.labels);
          const r = await trainer.train({ params, steps: x.stepsDone, batchSize: x.t.batchSize, lr: x.t.lr, seed: (o.seed * 7919 + round * 104729 + x.i) >>> 0 });
          const delta = new Float32Array(n);
          for (let j = 0; j < n; j++) delta[j] = r.params[j] - params[j];
          const sent = decode(encode(delta, { ...x.t.codec, seed: round * 1000 + x.i }));
          updates.set(x.t.node, { node: x.t.node, round, samples: shard.n, steps: r.steps, delta: sent, loss: r.loss, trainSeconds: x.compute, elapsedSeconds: x.total, batchSize: x.t.batchSize });
        }
      }));
      const fresh = used.map((x) => updates.get(x.t.node)!);
      const stale = pendingLate.filter((p) => p.arrival <= now + close);
      pendingLate = pendingLate.filter((p) => p.arrival > now + close && round - p.round < 3);
      if (o.foldLate) for (const x of late) pendingLate.push({ node: x.t.node, round, arrival: now + x.total, update: updates.get(x.t.node)! });
      const failures: RoundFailure[] = [
        ...outcomes.filter((x) => x.failedAt !== undefined).map((x) => ({ node: x.t.node, reason: 'went offline during the task', elapsedSeconds: x.failedAt })),
        ...late.map((x) => ({ node: x.t.node, reason: 'late', elapsedSeconds: close })),
      ];
      const nextParams = o.strategy.aggregate(round, params, [...fresh, ...stale.map((p) => p.update)], failures);
      if (nextParams) params = nextParams;
      const ev = await evaluator.evaluate(params, testShard);
      const wait = used.length ? used.reduce((s, x) => s + (close - x.total), 0) / used.length : 0;
      const rec: VirtualRound = {
        round,
        start: now,
        end: now + close + (o.serverSecondsPerRound ?? 0.5),
        participants: used.length + stale.length,
        selected: plan.tasks.length,
        accuracy: ev.accuracy,
        loss: ev.loss,
        stragglerWaitSeconds: wait,
        bytesUp: [...used, ...late].reduce((s, x) => s + x.upBytes, 0),
        bytesDown: outcomes.length * modelBytes,
        deadlineSeconds: plan.deadlineSeconds,
        tasks: outcomes.map((x) => ({
          node: x.t.node, tier: x.d.tier.name, steps: x.t.steps, stepsDone: x.stepsDone, expectedSeconds: x.t.expectedSeconds,
          actualSeconds: x.failedAt ?? x.total, late: x.failedAt === undefined && x.total > close,
          failed: x.failedAt !== undefined ? 'offline' : undefined, reason: x.t.reason,
        })),
      };
      now = rec.end;
      rounds.push(rec);
      o.onRound?.(rec);
      round++;
    }
  } finally {
    await Promise.all(pool.map((t) => t.close()));
  }
  return { rounds, idle, params };
}

/** First simulated time at which the accuracy reached `target`, or undefined. */
export function timeToAccuracy(rounds: readonly VirtualRound[], target: number): number | undefined {
  return rounds.find((r) => r.accuracy >= target)?.end;
}

/** Accuracy of the last round that ended within `budget` simulated seconds. */
export function accuracyAt(rounds: readonly VirtualRound[], budget: number): number | undefined {
  let acc: number | undefined;
  for (const r of rounds) if (r.end <= budget) acc = r.accuracy;
  return acc;
}
