/**
 * Weight of an update that arrives `staleness` rounds after the round it was computed for
 * (FedAsync's polynomial staleness function, Xie et al. 2019): (1 + s)^-a. 1 for a fresh update.
 */
export function stalenessWeight(staleness: number, exponent = 0.5): number {
  if (!Number.isFinite(staleness) || staleness < 0) throw new RangeError(`staleness must be ≥ 0, got ${staleness}`);
  return Math.pow(1 + staleness, -exponent);
}
