import type { CodecChoice } from '../transport';
import type { NodeInfo } from './fleet';
import type { ClientUpdate } from './fedavg';
import { fedNova } from './fednova';
import { stalenessWeight } from './staleness';
import { DEFAULT_BALANCE, observe, planBalancedRound, type BalanceOptions, type NodeHistory } from './balance';
import type { PlannedTask, RoundFailure, RoundPlan, Strategy } from './strategy';

export interface BalancedStrategyOptions extends Partial<Omit<BalanceOptions, 'modelBytes' | 'updateBytes'>> {
  clientsPerRound: number;
  epochs: number;
  batchSize: number;
  lr: number;
  seed: number;
  paramCount: number;
  /** The codec for a node given the seconds its upload may take; default: `codec`. */
  codecFor?: (node: NodeInfo, uploadBudgetSeconds: number) => CodecChoice;
  codec: CodecChoice;
  /** Exponent of the staleness weight for late updates folded into a later round. */
  stalenessExponent?: number;
  /** Upper bound of a round's deadline, seconds. */
  maxDeadlineSeconds?: number;
}

/**
 * fedgate's default strategy: hardware-aware selection and deadline-sized work (balance.ts),
 * over-commitment closing at K results, and FedNova aggregation, which stays unbiased when
 * participants did different amounts of local work. Late updates handed in by the aggregator are
 * weighted down by their staleness.
 */
export class BalancedStrategy implements Strategy {
  readonly name = 'balanced';
  readonly history = new Map<string, NodeHistory>();
  private readonly opts: BalanceOptions;
  private lastPlan?: { round: number; skipped: { node: string; reason: string }[]; targetSeconds: number; deadlineSeconds: number; steps: Map<string, number> };

  constructor(private readonly cfg: BalancedStrategyOptions) {
    this.opts = {
      ...DEFAULT_BALANCE,
      ...Object.fromEntries(Object.entries(cfg).filter(([, v]) => v !== undefined)),
      // An int8 update is about a quarter of the float32 model; the planner refines from observations.
      modelBytes: cfg.paramCount * 4,
      maxTargetSeconds: Math.min(cfg.maxTargetSeconds ?? Infinity, (cfg.maxDeadlineSeconds ?? Infinity) / (1 + (cfg.deadlineSlack ?? DEFAULT_BALANCE.deadlineSlack))),
      updateBytes: cfg.paramCount + 4 * Math.ceil(cfg.paramCount / 256),
    } as BalanceOptions;
  }

  get lastPlanInfo() {
    return this.lastPlan;
  }

  plan(round: number, fleet: readonly NodeInfo[]): RoundPlan {
    const p = planBalancedRound(round, fleet, this.history, this.opts);
    const deadlineSeconds = Math.min(this.cfg.maxDeadlineSeconds ?? Infinity, Math.max(p.deadlineSeconds, 1));
    this.lastPlan = { round, skipped: p.skipped, targetSeconds: p.targetSeconds, deadlineSeconds, steps: new Map(p.tasks.map((t) => [t.node, t.steps])) };
    const byId = new Map(fleet.map((n) => [n.id, n]));
    const tasks: PlannedTask[] = p.tasks.map((t) => ({
      node: t.node,
      steps: t.steps,
      batchSize: this.cfg.batchSize,
      lr: this.cfg.lr,
      codec: this.cfg.codecFor ? this.cfg.codecFor(byId.get(t.node)!, Math.max(0.05 * p.deadlineSeconds, p.deadlineSeconds - t.expectedSeconds + this.uploadSeconds(byId.get(t.node)!))) : this.cfg.codec,
      expectedSeconds: t.expectedSeconds,
      score: t.score,
      reason: t.reason,
    }));
    for (const t of tasks) this.history.set(t.node, observe(this.history.get(t.node), { round, selected: true }));
    return { tasks, deadlineSeconds, closeAfter: p.closeAfter, skipped: p.skipped };
  }

  /** The upload part of a node's expected time (already inside expectedSeconds), from its profile. */
  private uploadSeconds(n: NodeInfo): number {
    const up = n.profile?.upBytesPerSecond;
    return up ? this.opts.updateBytes / up : 0;
  }

  aggregate(round: number, global: Float32Array, results: readonly ClientUpdate[], failures: readonly RoundFailure[]): Float32Array | undefined {
    const weights = new Map<ClientUpdate, number>();
    for (const u of results) {
      weights.set(u, stalenessWeight(round - u.round, this.cfg.stalenessExponent ?? 0.5));
      if (u.round !== round) continue;
      this.history.set(u.node, observe(this.history.get(u.node), {
        round,
        selected: false,
        result: { steps: u.steps, batchSize: u.batchSize ?? this.cfg.batchSize, trainSeconds: u.trainSeconds ?? 0, elapsedSeconds: u.elapsedSeconds ?? NaN, loss: u.loss },
      }));
    }
    const plan = this.lastPlan?.round === round ? this.lastPlan : undefined;
    for (const f of failures) {
      const steps = plan?.steps.get(f.node) ?? 0;
      // Offline is not slowness: only an update that did not arrive in time bounds the node's speed.
      const offline = /offline/.test(f.reason);
      const seconds = f.elapsedSeconds ?? plan?.deadlineSeconds ?? Infinity;
      this.history.set(f.node, observe(this.history.get(f.node), { round, selected: false, late: offline ? undefined : { steps, batchSize: this.cfg.batchSize, deadlineSeconds: seconds } }));
    }
    return fedNova(global, results, weights);
  }
}
