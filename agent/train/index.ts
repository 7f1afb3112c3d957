export { Trainer } from './trainer';
export type { TrainTask, TrainResult, EvalResult, TrainerOptions } from './types';
export { planBlocks, type Block } from './batches';
