import { applyDelta, dedupeUpdates, type ClientUpdate } from './fedavg';

/**
 * FedNova (Wang et al. 2020, "Tackling the Objective Inconsistency Problem in Heterogeneous
 * Federated Optimization"), for plain local SGD: each client's delta is divided by its own number of
 * local steps τᵢ (a normalised average gradient), the normalised deltas are averaged with weights
 * pᵢ = nᵢ / Σn, and the result is scaled by the effective step count τ_eff = Σ pᵢ τᵢ:
 *
 *     global + τ_eff · Σ pᵢ Δᵢ / τᵢ
 *
 * Unlike FedAvg, a client that ran more steps does not pull the model towards its own optimum more
 * than its data share warrants, so work can be sized per client without biasing the result.
 *
 * One guard on top of the paper: a client's delta is stretched by at most `maxStretch` (τ_eff/τᵢ
 * is capped). Local progress is not linear in steps — the first steps of a pass move furthest — so
 * stretching a 24-step update to a 400-step effective length overshoots and can wreck the model (we
 * saw a round fall to chance that way). Within the cap this is exactly FedNova; beyond it, a client
 * that did very little work is under-weighted rather than extrapolated.
 *
 * Updates with 0 steps carry no information and are skipped. `weights` (default 1) scale each
 * client's pᵢ, e.g. to down-weight stale updates.
 */
export const DEFAULT_MAX_STRETCH = 4;

export function fedNova(global: Float32Array, updates: readonly ClientUpdate[], weights?: ReadonlyMap<ClientUpdate, number>, maxStretch = DEFAULT_MAX_STRETCH): Float32Array | undefined {
  const useful = dedupeUpdates(updates).filter((u) => u.steps > 0 && u.samples > 0);
  const p = useful.map((u) => u.samples * (weights?.get(u) ?? 1));
  const total = p.reduce((s, x) => s + x, 0);
  if (!(total > 0)) return undefined;
  let tauEff = 0;
  for (let i = 0; i < useful.length; i++) tauEff += (p[i] / total) * useful[i].steps;
  const acc = new Float64Array(global.length);
  for (let i = 0; i < useful.length; i++) {
    const d = useful[i].delta;
    if (d.length !== global.length) throw new RangeError(`update from ${useful[i].node} has ${d.length} values, the model ${global.length}`);
    const w = (p[i] / total) * Math.min(maxStretch, tauEff / useful[i].steps);
    for (let j = 0; j < d.length; j++) acc[j] += w * d[j];
  }
  return applyDelta(global, Float32Array.from(acc));
}
