import { firstNonFinite, type ClientUpdate } from './fedavg';

export class UpdateRejected extends Error {
  override name = 'UpdateRejected';
}

export interface UpdateExpectation {
  round: number;
  paramCount: number;
  /** Nodes that were given a task this round. */
  selected: ReadonlySet<string>;
}

/**
 * The largest |value| an update may hold. The models fedgate trains have weights of the order of 1,
 * and one round's delta is smaller still; a value beyond a million is no training step but a corrupt
 * (finite, so the decoder takes it) or hostile update, which would wreck the global model for every
 * node. It also keeps aggregation finite: FedAvg's mean and FedNova's at most 4× stretch of values
 * within ±1e6 cannot carry a finite float32 weight past the largest float32.
 */
export const MAX_UPDATE_MAGNITUDE = 1e6;

/** Checks an update whole before any of it is used: round, node, shape, finite values within ±MAX_UPDATE_MAGNITUDE, weights. */
export function checkUpdate(u: ClientUpdate, want: UpdateExpectation): ClientUpdate {
  if (u.round !== want.round) throw new UpdateRejected(`update from ${u.node} is for round ${u.round}, the current round is ${want.round}`);
  if (!want.selected.has(u.node)) throw new UpdateRejected(`update from ${u.node}, which was not selected for round ${want.round}`);
  if (!(u.delta instanceof Float32Array)) throw new UpdateRejected(`update from ${u.node} is not float32`);
  if (u.delta.length !== want.paramCount) throw new UpdateRejected(`update from ${u.node} has ${u.delta.length} values, the model has ${want.paramCount}`);
  if (!Number.isInteger(u.samples) || u.samples < 0) throw new UpdateRejected(`update from ${u.node} claims ${u.samples} samples`);
  if (!Number.isInteger(u.steps) || u.steps < 0) throw new UpdateRejected(`update from ${u.node} claims ${u.steps} steps`);
  const bad = firstNonFinite(u.delta);
  if (bad >= 0) throw new UpdateRejected(`update from ${u.node} has a non-finite value (${u.delta[bad]}) at index ${bad}`);
  for (let i = 0; i < u.delta.length; i++) {
    if (Math.abs(u.delta[i]) > MAX_UPDATE_MAGNITUDE) {
      throw new UpdateRejected(`update from ${u.node} has value ${u.delta[i]} at index ${i}, beyond ±${MAX_UPDATE_MAGNITUDE} (the bound on any update value)`);
    }
  }
  return u;
}
