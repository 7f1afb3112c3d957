import type { ModelSpec } from '../model';

/**
 * `steps` minibatch SGD steps; batches come from a seeded shuffle of the local data, reshuffled
 * every pass (the last batch of a pass may be smaller). `deadlineSeconds`: stop early and return
 * the partial work.
 */
export interface TrainTask {
  params: Float32Array;
  steps: number;
  batchSize: number;
  lr: number;
  seed: number;
  deadlineSeconds?: number;
}

export interface TrainResult {
  params: Float32Array;
  /** Mean train loss over the steps run (each step's loss is the mean over its batch). */
  loss: number;
  steps: number;
  samples: number;
  /** Wall time of the whole task, rests included. */
  seconds: number;
  /** Time spent computing blocks (gather + session.run): `samples / busySeconds` is the compute throughput. */
  busySeconds: number;
  /** Time spent resting or paused because of the duty cycle (see Trainer.setDutyCycle). */
  idleSeconds: number;
  /** Ended before `steps`: the deadline passed (work or pause) or the trainer was closed. */
  stoppedEarly: boolean;
}

export interface EvalResult {
  loss: number;
  accuracy: number;
  samples: number;
}

export interface TrainerOptions {
  /** ORT intra-op threads (default 1). */
  threads?: number;
}

/** Messages between Trainer (main thread) and its worker. */
export type Request =
  | { id: number; op: 'init'; spec: ModelSpec; threads: number }
  | { id: number; op: 'setData'; x: Float32Array; labels: Uint8Array }
  | { id: number; op: 'train'; task: TrainTask }
  | { id: number; op: 'evaluate'; params: Float32Array; data?: { x: Float32Array; labels: Uint8Array } }
  | { id: number; op: 'close' };

export type Response = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };
