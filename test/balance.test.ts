import { describe, expect, it } from 'vitest';
import {
  fedAvg, fedNova, planBalancedRound, selectNodes, sizeWork, estimateNodes, unavailableReason, observe, quantile,
  stalenessWeight, BalancedStrategy, DEFAULT_BALANCE, summarizeProfile, type NodeInfo, type NodeHistory, type BalanceOptions, type ClientUpdate,
} from '../agent/aggregator';

const node = (id: string, samples: number, sps: number | null, extra: Partial<NodeInfo> = {}): NodeInfo => ({
  id, online: true, session: 1, samples, busy: false, lastSeen: 0,
  profile: { trainSamplesPerSecond: sps, upBytesPerSecond: null, downBytesPerSecond: null }, ...extra,
});

const opts = (over: Partial<BalanceOptions> = {}): BalanceOptions => ({
  ...DEFAULT_BALANCE, clientsPerRound: 4, epochs: 5, batchSize: 32, modelBytes: 400_000, updateBytes: 100_000, seed: 1, ...over,
});

describe('work sizing against the deadline', () => {
  it('fits the steps into the target, between the minimum and the full work', () => {
    const est = { samplesPerSecond: 1000, commSeconds: 2, fullSteps: 500, fullSeconds: 18, known: true };
    // (10 s − 2 s comm) × 1000 samples/s / 32 = 250 steps
    expect(sizeWork(est, 10, 3200, { batchSize: 32, minEpochs: 0.25 })).toBe(250);
    // Plenty of time: capped at the full work.
    expect(sizeWork(est, 1000, 3200, { batchSize: 32, minEpochs: 0.25 })).toBe(500);
    // No time at all: the minimum, a quarter epoch of 100 steps.
    expect(sizeWork(est, 1, 3200, { batchSize: 32, minEpochs: 0.25 })).toBe(25);
  });

  it('gives fast gateways their full epochs and slow ones fewer steps, all expected inside the deadline', () => {
    const fleet = [node('fast', 3200, 8000), node('mid', 3200, 2000), node('slow', 3200, 500), node('slower', 3200, 250)];
    const plan = planBalancedRound(1, fleet, new Map(), opts({ clientsPerRound: 4, overcommit: 1 }));
    const steps = Object.fromEntries(plan.tasks.map((t) => [t.node, t.steps]));
    // Full work = 5 epochs × 100 steps = 500 steps = 16000 samples: 2 s fast, 8 s mid, 32 s slow, 64 s slower.
    expect(plan.targetSeconds).toBeCloseTo(20, 6); // median of 2, 8, 32, 64
    expect(steps).toEqual({ fast: 500, mid: 500, slow: Math.floor((20 * 500) / 32), slower: Math.floor((20 * 250) / 32) });
    for (const t of plan.tasks) expect(t.expectedSeconds).toBeLessThanOrEqual(plan.deadlineSeconds);
    expect(plan.deadlineSeconds).toBeCloseTo(25, 6);
  });
});

describe('a deadline cap below the target', () => {
  // Regression: with slow devices and a short --deadline, work was sized to the uncapped target, so
  // every task overran the capped deadline and no round ever had a participant.
  it('shrinks the target, and the work, to fit the cap', () => {
    const fleet = [node('fast', 3200, 8000), node('mid', 3200, 2000), node('slow', 3200, 500), node('slower', 3200, 250)];
    const plan = planBalancedRound(1, fleet, new Map(), opts({ clientsPerRound: 4, overcommit: 1, maxTargetSeconds: 8 }));
    expect(plan.targetSeconds).toBe(8); // the median 20 s, capped
    expect(plan.deadlineSeconds).toBe(10);
    const steps = Object.fromEntries(plan.tasks.map((t) => [t.node, t.steps]));
    expect(steps).toEqual({ fast: 500, mid: 500, slow: Math.floor((8 * 500) / 32), slower: Math.floor((8 * 250) / 32) });
    for (const t of plan.tasks) expect(t.expectedSeconds).toBeLessThanOrEqual(plan.deadlineSeconds);
  });

  it('BalancedStrategy derives the cap from maxDeadlineSeconds', () => {
    const fleet = [node('a', 3200, 100), node('b', 3200, 100)];
    const s = new BalancedStrategy({ clientsPerRound: 2, overcommit: 1, epochs: 5, batchSize: 32, lr: 0.1, seed: 1, paramCount: 1000, codec: { codec: 'int8' }, maxDeadlineSeconds: 12.5 });
    const plan = s.plan(1, fleet);
    expect(plan.deadlineSeconds).toBe(12.5);
    // Target 12.5 / 1.25 = 10 s at 100 samples/s (less the transfer of 4,000 + 1,004 bytes at the fleet's unknown link): at most 31 steps.
    for (const t of plan.tasks) {
      expect(t.steps).toBeLessThanOrEqual(Math.floor((10 * 100) / 32));
      expect(t.expectedSeconds!).toBeLessThanOrEqual(12.5);
    }
  });
});

describe('over-commitment', () => {
  it('selects 1.3 × K and closes at K results', () => {
    const fleet = Array.from({ length: 30 }, (_, i) => node(`n${i}`, 1000, 1000 + i));
    const plan = planBalancedRound(1, fleet, new Map(), opts({ clientsPerRound: 10, overcommit: 1.3 }));
    expect(plan.tasks).toHaveLength(13);
    expect(plan.closeAfter).toBe(10);
    expect(new Set(plan.tasks.map((t) => t.node)).size).toBe(13);
  });

  it('never asks for more than the eligible nodes', () => {
    const plan = planBalancedRound(1, [node('a', 10, 1), node('b', 10, 1)], new Map(), opts({ clientsPerRound: 10 }));
    expect(plan.tasks).toHaveLength(2);
    expect(plan.closeAfter).toBe(2);
  });
});

describe('selection', () => {
  it('leaves no eligible node out for more than maxIdleRounds rounds', () => {
    const fleet = Array.from({ length: 20 }, (_, i) => node(`n${String(i).padStart(2, '0')}`, 1000, i === 7 ? 10 : 5000));
    const history = new Map<string, NodeHistory>();
    const lastPicked = new Map<string, number>(fleet.map((n) => [n.id, 0]));
    let worstGap = 0;
    for (let round = 1; round <= 60; round++) {
      const plan = planBalancedRound(round, fleet, history, opts({ clientsPerRound: 4, overcommit: 1, maxIdleRounds: 6 }));
      for (const t of plan.tasks) {
        worstGap = Math.max(worstGap, round - lastPicked.get(t.node)! - 1);
        lastPicked.set(t.node, round);
        history.set(t.node, observe(history.get(t.node), { round, selected: true, result: { steps: t.steps, batchSize: 32, trainSeconds: 1, elapsedSeconds: 1.5, loss: 0.5 } }));
      }
    }
    for (const [, last] of lastPicked) worstGap = Math.max(worstGap, 60 - last);
    expect(worstGap).toBeLessThanOrEqual(6);
  });

  it('prefers nodes that finish within the target, at equal statistical utility', () => {
    const fleet = [node('quick', 1000, 10_000), node('slow', 1000, 100), node('quick2', 1000, 9000), node('slow2', 1000, 120)];
    const est = estimateNodes(fleet, new Map(), opts());
    const history = new Map(fleet.map((n) => [n.id, observe(undefined, { round: 1, selected: true, result: { steps: 10, batchSize: 32, trainSeconds: 0, elapsedSeconds: NaN, loss: 1 } })]));
    const chosen = selectNodes(fleet, est, history, 2, 2, 1, { ...opts(), maxIdleRounds: 100, exploration: 0 });
    expect(chosen.map((c) => c.node).sort()).toEqual(['quick', 'quick2']);
  });

  it('explores untried nodes', () => {
    const fleet = Array.from({ length: 10 }, (_, i) => node(`n${i}`, 1000, 1000));
    const history = new Map<string, NodeHistory>();
    for (let i = 0; i < 8; i++) history.set(`n${i}`, { timesSelected: 1, lastSelected: 1, lastResult: 1, lastLoss: 5, late: 0 });
    const est = estimateNodes(fleet, history, opts());
    const chosen = selectNodes(fleet, est, history, 2, 5, 100, { ...opts(), maxIdleRounds: 100, exploration: 0.4 });
    expect(chosen.filter((c) => c.reason === 'exploration').map((c) => c.node).sort()).toEqual(['n8', 'n9']);
  });

  it('skips nodes that are offline, busy, hot or low on battery, and says why', () => {
    const o = opts();
    expect(unavailableReason(node('a', 10, 1, { online: false }), o)).toBe('offline');
    expect(unavailableReason(node('a', 10, 1, { busy: true }), o)).toMatch(/busy/);
    expect(unavailableReason(node('a', 10, 1, { profile: { trainSamplesPerSecond: 1, upBytesPerSecond: null, downBytesPerSecond: null, temperatureC: 90 } }), o)).toBe('temperature 90 °C above 85');
    expect(unavailableReason(node('a', 10, 1, { profile: { trainSamplesPerSecond: 1, upBytesPerSecond: null, downBytesPerSecond: null, batteryPercent: 10, onBattery: true } }), o)).toBe('battery at 10%');
    // On mains power a low battery reading does not matter.
    expect(unavailableReason(node('a', 10, 1, { profile: { trainSamplesPerSecond: 1, upBytesPerSecond: null, downBytesPerSecond: null, batteryPercent: 10, onBattery: false } }), o)).toBeUndefined();
    const plan = planBalancedRound(1, [node('a', 10, 1, { online: false }), node('b', 10, 1)], new Map(), o);
    expect(plan.tasks.map((t) => t.node)).toEqual(['b']);
    expect(plan.skipped).toEqual([{ node: 'a', reason: 'offline' }]);
  });
});

describe('profiles with missing sensor values', () => {
  it('treats null, NaN and missing as unknown, never NaN in a plan', () => {
    expect(summarizeProfile({ trainSamplesPerSecond: NaN, link: { upBytesPerSecond: null }, temperatureC: null, load: { total: null, other: null }, battery: {} })).toEqual({
      trainSamplesPerSecond: null, upBytesPerSecond: null, downBytesPerSecond: null, cpuLoad: null, temperatureC: null, batteryPercent: null, onBattery: null,
    });
    expect(summarizeProfile(undefined).trainSamplesPerSecond).toBeNull();
    const fleet = [node('known', 3200, 1000), node('unknown', 3200, null, { profile: summarizeProfile({}) }), node('bare', 3200, null, { profile: undefined })];
    const plan = planBalancedRound(1, fleet, new Map(), opts({ clientsPerRound: 3, overcommit: 1 }));
    expect(plan.tasks).toHaveLength(3);
    for (const t of plan.tasks) {
      expect(Number.isFinite(t.steps)).toBe(true);
      expect(Number.isFinite(t.expectedSeconds)).toBe(true);
    }
    // Unknown speed falls back to the fleet median (here the one known node): same work.
    expect(new Set(plan.tasks.map((t) => t.steps)).size).toBe(1);
    expect(Number.isFinite(plan.deadlineSeconds)).toBe(true);
  });
});

const upd = (node: string, samples: number, steps: number, delta: number[], round = 1): ClientUpdate => ({ node, round, samples, steps, loss: 0, delta: Float64Array.from(delta) as unknown as Float32Array });

describe('aggregation with unequal local work', () => {
  it('is FedNova: τ_eff · Σ pᵢ Δᵢ/τᵢ', () => {
    const g = Float32Array.from([0, 0]);
    // p = (0.5, 0.5), τ = (10, 30): τ_eff = 20; Δ/τ = ([1,0], [0,1]) → 20 · ([0.5, 0.5]) = [10, 10]
    expect(Array.from(fedNova(g, [upd('a', 100, 10, [10, 0]), upd('b', 100, 30, [0, 30])])!)).toEqual([10, 10]);
  });

  it('with the same data and different step counts, equals τ_eff steps of the common gradient', () => {
    const grad = [0.5, -2, 1];
    const lr = 0.01;
    const steps = [3, 7, 12];
    const ups = steps.map((t, i) => upd(`c${i}`, 200, t, grad.map((x) => -lr * t * x)));
    const tauEff = (3 + 7 + 12) / 3;
    const out = fedNova(new Float32Array(3), ups)!;
    grad.forEach((x, j) => expect(out[j]).toBeCloseTo(-lr * tauEff * x, 6));
  });

  it('converges to the data-weighted optimum where FedAvg is pulled towards the client doing more steps', () => {
    // Two clients with quadratic losses ½(x − cᵢ)², equal data, optima 0 and 10; client b runs 3× the steps.
    const lr = 0.01;
    const clients = [{ c: 0, steps: 10 }, { c: 10, steps: 30 }];
    const run = (agg: (g: Float32Array, u: ClientUpdate[]) => Float32Array | undefined) => {
      let x = 0;
      for (let round = 0; round < 400; round++) {
        const ups = clients.map((cl, i) => {
          let y = x;
          for (let s = 0; s < cl.steps; s++) y -= lr * (y - cl.c);
          return upd(`c${i}`, 100, cl.steps, [y - x], round);
        });
        x = agg(Float32Array.from([x]), ups)![0];
      }
      return x;
    };
    const nova = run((g, u) => fedNova(g, u));
    const avg = run((g, u) => fedAvg(g, u));
    expect(Math.abs(nova - 5)).toBeLessThan(0.5); // 4.76 at this learning rate (first-order unbiased)
    expect(avg).toBeGreaterThan(7); // 7.3: biased towards client b
  });

  it('stretches a tiny update at most maxStretch times', () => {
    // τ = (1, 99): τ_eff = 50; client a would be stretched 50× but is capped at 4×.
    const out = fedNova(new Float32Array(1), [upd('a', 100, 1, [1]), upd('b', 100, 99, [0])])!;
    expect(out[0]).toBeCloseTo(0.5 * 4, 6);
  });

  it('weights stale updates down by (1 + s)^-0.5 and counts a duplicate once', () => {
    expect(stalenessWeight(0)).toBe(1);
    expect(stalenessWeight(3)).toBe(0.5);
    const s = new BalancedStrategy({ clientsPerRound: 2, epochs: 1, batchSize: 32, lr: 0.1, seed: 1, paramCount: 1, codec: { codec: 'int8' } });
    const fresh = upd('a', 100, 10, [1], 5);
    const stale = upd('b', 100, 10, [4], 2); // 3 rounds old: weight 0.5
    // p = (100, 50)/150; τ equal → plain weighted mean: (1·100 + 4·50)/150 = 2
    expect(s.aggregate(5, new Float32Array(1), [fresh, stale, fresh], [])![0]).toBeCloseTo(2, 6);
  });

  it('returns undefined (keep the model) when nothing carries weight', () => {
    expect(fedNova(new Float32Array(1), [upd('a', 0, 10, [1]), upd('b', 10, 0, [1])])).toBeUndefined();
  });

  it('quantile interpolates', () => {
    expect(quantile([4, 1, 3, 2], 0.5)).toBe(2.5);
    expect(quantile([7], 0.9)).toBe(7);
  });
});

describe('the planner reads a real profile message', () => {
  it('maps load, temperature, battery and link from the profile JSON', () => {
    const profile = {
      version: 1, ts: 1, hardware: {}, load: { total: 0.8, other: 0.77 }, temperatureC: 61, battery: { present: true, percent: 42, onAc: false, charging: false },
      trainSamplesPerSecond: 107054, trainModel: 'mlp-784-128-10', link: { upBytesPerSecond: 125000, downBytesPerSecond: null },
    };
    expect(summarizeProfile(profile)).toEqual({ trainSamplesPerSecond: 107054, upBytesPerSecond: 125000, downBytesPerSecond: null, cpuLoad: 0.77, temperatureC: 61, batteryPercent: 42, onBattery: true });
    // No battery present: never "on battery", whatever onAc says.
    expect(summarizeProfile({ battery: { present: false, percent: null, onAc: true } }).onBattery).toBe(false);
    expect(summarizeProfile({ battery: { present: false, percent: null, onAc: false } }).onBattery).toBe(false);
    expect(summarizeProfile({ battery: { percent: 50 } }).onBattery).toBeNull();
  });
});
