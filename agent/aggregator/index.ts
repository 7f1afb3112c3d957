export { Aggregator, type AggregatorOptions, type RoundRecord, type TaskRecord, type RunResult, type Evaluation } from './aggregator';
export { FedAvgStrategy, localSteps, sampleWithoutReplacement, type Strategy, type RoundPlan, type PlannedTask, type RoundFailure, type FedAvgOptions } from './strategy';
export { fedAvg, weightedMeanDelta, applyDelta, dedupeUpdates, firstNonFinite, type ClientUpdate } from './fedavg';
export { checkUpdate, UpdateRejected, type UpdateExpectation } from './validate';
export { saveCheckpoint, loadCheckpoint, type Checkpoint } from './checkpoint';
export { Fleet, type NodeInfo } from './fleet';
