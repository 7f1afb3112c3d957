import type { CodecChoice } from '../transport';
import type { NodeInfo } from './fleet';
import { fedAvg, type ClientUpdate } from './fedavg';
import { createRng } from '../data';

/** One node's work for a round. */
export interface PlannedTask {
  node: string;
  steps: number;
  batchSize: number;
  lr: number;
  codec: CodecChoice;
  /** Expected seconds to finish, when the strategy can tell. */
  expectedSeconds?: number;
  /** Why the node was chosen (selection score), for the report. */
  score?: number;
  reason?: string;
}

export interface RoundPlan {
  tasks: PlannedTask[];
  /** Duration each task is allowed, seconds from its receipt. */
  deadlineSeconds: number;
  /** Close the round as soon as this many results are in (over-commitment); default: all tasks. */
  closeAfter?: number;
  /** Nodes left out because they may not train now, and why. */
  skipped?: { node: string; reason: string }[];
}

export interface RoundFailure {
  node: string;
  reason: string;
  /** Seconds the node had, from its task being sent to the round closing without its update. */
  elapsedSeconds?: number;
}

/**
 * A round is two questions (after Flower's Strategy): whom to ask with what instructions (`plan`),
 * and what to make of the answers and the failures (`aggregate`). `aggregate` returning undefined
 * keeps the current global model.
 */
export interface Strategy {
  readonly name: string;
  plan(round: number, fleet: readonly NodeInfo[]): RoundPlan;
  aggregate(round: number, global: Float32Array, results: readonly ClientUpdate[], failures: readonly RoundFailure[]): Float32Array | undefined;
}

export interface FedAvgOptions {
  /** Nodes asked per round; 0 or more than the fleet means all live nodes. */
  clientsPerRound: number;
  epochs: number;
  batchSize: number;
  lr: number;
  codec: CodecChoice;
  /** Per-node codec (e.g. a node's own pin); default: `codec`. */
  codecFor?: (node: NodeInfo) => CodecChoice;
  deadlineSeconds: number;
  seed: number;
}

/** Plain FedAvg: a seeded random K of the live nodes, each running the same number of local epochs. */
export class FedAvgStrategy implements Strategy {
  readonly name = 'fedavg';

  constructor(private readonly opts: FedAvgOptions) {}

  plan(round: number, fleet: readonly NodeInfo[]): RoundPlan {
    const eligible = fleet.filter((n) => n.samples > 0);
    const k = this.opts.clientsPerRound > 0 ? Math.min(this.opts.clientsPerRound, eligible.length) : eligible.length;
    const chosen = sampleWithoutReplacement(eligible, k, this.opts.seed * 1_000_003 + round);
    return {
      deadlineSeconds: this.opts.deadlineSeconds,
      tasks: chosen.map((n) => ({
        node: n.id,
        steps: localSteps(n.samples, this.opts.batchSize, this.opts.epochs),
        batchSize: this.opts.batchSize,
        lr: this.opts.lr,
        codec: this.opts.codecFor?.(n) ?? this.opts.codec,
      })),
    };
  }

  aggregate(_round: number, global: Float32Array, results: readonly ClientUpdate[]): Float32Array | undefined {
    return fedAvg(global, results);
  }
}

/** SGD steps for `epochs` passes over `samples` at `batchSize` (the last batch of a pass may be partial). */
export function localSteps(samples: number, batchSize: number, epochs: number): number {
  return Math.ceil(samples / batchSize) * epochs;
}

/** k distinct items, seeded; keeps the input order among the chosen. */
export function sampleWithoutReplacement<T>(items: readonly T[], k: number, seed: number): T[] {
  if (k >= items.length) return [...items];
  const rng = createRng(seed >>> 0);
  const idx = items.map((_, i) => i);
  for (let i = 0; i < k; i++) {
    const j = i + rng.int(idx.length - i);
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx.slice(0, k).sort((a, b) => a - b).map((i) => items[i]);
}
