export { simulate, nodeIdFor, simFleetName, type SimulateOptions } from './simulate';
export { runAggregatorJob, formatRound, writeOutput, checkOutput, checkJobFiles, type JobOptions, type JobReport } from './job';
export { loadShard, loadSplit, parseShard, parseDatasetName, defaultSpec, defaultDataDir, type DatasetName } from './datasets';
export { createEvaluator } from './evaluator';
