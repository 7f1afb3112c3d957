/**
 * bench/balance: plain FedAvg (random K, fixed local epochs, wait for all selected) against
 * fedgate's balancing (hardware-aware selection, deadline-sized work, over-commitment, FedNova), on
 * the same simulated fleet (same seeds, devices, data shards), on the virtual clock with real
 * training. Prints time-to-target-accuracy, accuracy at the same time budget and the mean
 * straggler wait per round; the last line is one JSON object.
 *
 *   npm run bench:balance [-- --rounds 60 --quick]
 */
import * as path from 'node:path';
import { existsSync } from 'node:fs';
import { loadMnist, loadFemnist, partition, parsePartition, type Dataset } from '../agent/data';
import { mlp, paramCount, type ModelSpec } from '../agent/model';
import { BalancedStrategy, FedAvgStrategy, type Strategy } from '../agent/aggregator';
import { runVirtual, timeToAccuracy, accuracyAt, type VirtualRound } from '../agent/sim/virtual';
import { availabilityWindows, parseTierMix, type Device } from '../agent/sim/tiers';

interface Case {
  name: string;
  train: Dataset;
  test: Dataset;
  shards: Uint32Array[];
  spec: ModelSpec;
  rounds: number;
  lr: number;
}

const args = process.argv.slice(2);
const arg = (name: string, fallback: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const quick = args.includes('--quick');
const SEED = arg('seed', 1);
const K = 10;
const EPOCHS = 5;
const BATCH = 32;
const TIERS = 'pi3:25,pi4:25,jetson:25,x86:25';

function devicesFor(count: number, horizon: number): Device[] {
  return parseTierMix(TIERS, count, SEED).map((tier, i) => ({ id: `dev-${String(i).padStart(3, '0')}`, tier, windows: availabilityWindows(tier, horizon, SEED * 1000 + i) }));
}

async function arm(c: Case, label: string, strategy: Strategy, devices: Device[], rounds: number, budget?: number): Promise<VirtualRound[]> {
  const t0 = Date.now();
  const res = await runVirtual({ spec: c.spec, train: c.train, test: c.test, devices, shards: c.shards, strategy, rounds, timeBudgetSeconds: budget, seed: SEED, workers: 2 });
  const last = res.rounds[res.rounds.length - 1];
  console.log(`  ${label.padEnd(9)} ${res.rounds.length} rounds, ${last.end.toFixed(0)} s simulated, acc ${last.accuracy.toFixed(4)} (${((Date.now() - t0) / 1000).toFixed(0)} s real)`);
  return res.rounds;
}

function summary(rounds: VirtualRound[]) {
  const n = rounds.length;
  return {
    rounds: n,
    simulatedSeconds: rounds[n - 1].end,
    meanRoundSeconds: rounds[n - 1].end / n,
    meanStragglerWaitSeconds: rounds.reduce((s, r) => s + r.stragglerWaitSeconds, 0) / n,
    finalAccuracy: rounds[n - 1].accuracy,
  };
}

async function runCase(c: Case) {
  console.log(`\n${c.name}: ${c.shards.length} clients, K=${K}, ${EPOCHS} local epochs, batch ${BATCH}, tiers ${TIERS}`);
  const horizon = 1e7;
  const devices = devicesFor(c.shards.length, horizon);
  const n = paramCount(c.spec);
  const fedavg = await arm(c, 'fedavg', new FedAvgStrategy({ clientsPerRound: K, epochs: EPOCHS, batchSize: BATCH, lr: c.lr, codec: { codec: 'int8' }, deadlineSeconds: 3600, seed: SEED }), devices, c.rounds);
  const budget = fedavg[fedavg.length - 1].end;
  const balanced = await arm(c, 'fedgate', new BalancedStrategy({ clientsPerRound: K, epochs: EPOCHS, batchSize: BATCH, lr: c.lr, codec: { codec: 'int8' }, seed: SEED, paramCount: n }), devices, c.rounds * 20, budget);
  // Target: 95 % of the accuracy plain FedAvg reaches at the end of its run.
  const target = Math.floor(0.95 * fedavg[fedavg.length - 1].accuracy * 1000) / 1000;
  const tA = timeToAccuracy(fedavg, target);
  const tB = timeToAccuracy(balanced, target);
  const accA = accuracyAt(fedavg, budget)!;
  const accB = accuracyAt(balanced, budget)!;
  // A stricter second target: the best accuracy plain FedAvg reached in its whole run.
  const best = Math.max(...fedavg.map((r) => r.accuracy));
  const tA2 = timeToAccuracy(fedavg, best);
  const tB2 = timeToAccuracy(balanced, best);
  const res = {
    dataset: c.name,
    target,
    strictTarget: best,
    timeToStrictTarget: { fedavg: tA2 ?? null, fedgate: tB2 ?? null },
    strictSpeedup: tA2 !== undefined && tB2 !== undefined ? tA2 / tB2 : null,
    timeToTarget: { fedavg: tA ?? null, fedgate: tB ?? null },
    speedup: tA !== undefined && tB !== undefined ? tA / tB : null,
    budgetSeconds: budget,
    accuracyAtBudget: { fedavg: accA, fedgate: accB },
    accuracyDeltaPoints: (accB - accA) * 100,
    fedavg: summary(fedavg),
    fedgate: summary(balanced),
  };
  console.log(`  target accuracy ${target} (95 % of FedAvg's final): FedAvg ${tA?.toFixed(0) ?? 'never'} s, fedgate ${tB?.toFixed(0) ?? 'never'} s → ${res.speedup?.toFixed(2) ?? '-'}× faster`);
  console.log(`  stricter target ${best.toFixed(4)} (FedAvg's best): FedAvg ${tA2?.toFixed(0)} s, fedgate ${tB2?.toFixed(0) ?? 'never'} s → ${res.strictSpeedup?.toFixed(2) ?? '-'}× faster`);
  console.log(`  at FedAvg's ${budget.toFixed(0)} s budget: FedAvg ${accA.toFixed(4)}, fedgate ${accB.toFixed(4)} (${res.accuracyDeltaPoints >= 0 ? '+' : ''}${res.accuracyDeltaPoints.toFixed(2)} points)`);
  console.log(`  mean straggler wait per round: FedAvg ${res.fedavg.meanStragglerWaitSeconds.toFixed(1)} s, fedgate ${res.fedgate.meanStragglerWaitSeconds.toFixed(1)} s; mean round ${res.fedavg.meanRoundSeconds.toFixed(1)} s vs ${res.fedgate.meanRoundSeconds.toFixed(1)} s`);
  return res;
}

async function main() {
  const results = [];
  const mnistTrain = loadMnist('train');
  const mnistTest = loadMnist('test');
  const clients = 100;
  results.push(await runCase({
    name: 'mnist-dirichlet0.3',
    train: mnistTrain, test: mnistTest,
    shards: partition(mnistTrain, parsePartition('dirichlet:0.3'), clients, SEED),
    spec: mlp(784, [128], 10), rounds: arg('rounds', quick ? 15 : 40), lr: 0.1,
  }));
  const dataDir = process.env.FEDGATE_DATA_DIR ?? path.resolve(__dirname, '../../../shared/data');
  const femDir = path.join(dataDir, 'femnist');
  if (existsSync(femDir)) {
    const train = loadFemnist(femDir, 'train');
    const test = loadFemnist(femDir, 'test');
    results.push(await runCase({
      name: 'femnist-writers',
      train, test,
      shards: partition(train, parsePartition('owner'), train.ownerNames!.length, SEED),
      spec: mlp(784, [128], 62), rounds: arg('rounds', quick ? 15 : 60), lr: 0.05,
    }));
  } else {
    console.log(`\nFEMNIST skipped: ${femDir} is absent (set FEDGATE_DATA_DIR)`);
  }
  const goal = results.every((r) => r.speedup !== null && r.speedup >= 3 && r.accuracyDeltaPoints >= -0.5);
  console.log(`\ngoal (≥ 3× faster to target, final accuracy no worse than 0.5 points): ${goal ? 'met' : 'NOT met'}`);
  console.log(JSON.stringify({ bench: 'balance', seed: SEED, tiers: TIERS, k: K, epochs: EPOCHS, results, goalMet: goal }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
