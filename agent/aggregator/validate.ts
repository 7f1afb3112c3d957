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

/** Checks an update whole before any of it is used: round, node, shape, finite values, weights. */
export function checkUpdate(u: ClientUpdate, want: UpdateExpectation): ClientUpdate {
  if (u.round !== want.round) throw new UpdateRejected(`update from ${u.node} is for round ${u.round}, the current round is ${want.round}`);
  if (!want.selected.has(u.node)) throw new UpdateRejected(`update from ${u.node}, which was not selected for round ${want.round}`);
  if (!(u.delta instanceof Float32Array)) throw new UpdateRejected(`update from ${u.node} is not float32`);
  if (u.delta.length !== want.paramCount) throw new UpdateRejected(`update from ${u.node} has ${u.delta.length} values, the model has ${want.paramCount}`);
  if (!Number.isInteger(u.samples) || u.samples < 0) throw new UpdateRejected(`update from ${u.node} claims ${u.samples} samples`);
  if (!Number.isInteger(u.steps) || u.steps < 0) throw new UpdateRejected(`update from ${u.node} claims ${u.steps} steps`);
  const bad = firstNonFinite(u.delta);
  if (bad >= 0) throw new UpdateRejected(`update from ${u.node} has a non-finite value (${u.delta[bad]}) at index ${bad}`);
  return u;
}
