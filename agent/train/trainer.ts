import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { logger } from '../log';
import { type ModelSpec, validateSpec } from '../model';
import { createControl, readDutyCycle, requestStop, writeDutyCycle } from './pace';
import type { EvalResult, Request, Response, TrainResult, TrainTask, TrainerOptions } from './types';

const log = logger('train');

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };
type Op<R = Request> = R extends unknown ? Omit<R, 'id'> : never;

/**
 * The worker must run compiled JS. Under vitest this file is the .ts source, so point at its
 * compiled twin in dist/ (tests run after `tsc`).
 */
function workerScript(): string {
  const dir = __filename.endsWith('.ts') ? path.resolve(__dirname, '../../dist/agent/train') : __dirname;
  const file = path.join(dir, 'worker.js');
  if (!fs.existsSync(file)) throw new Error(`trainer worker script ${file} not found: build first (npx tsc -p tsconfig.json)`);
  return file;
}

/**
 * Local training through ONNX Runtime in a worker thread, so the main thread's event loop (MQTT
 * keepalives, heartbeats) stays free. One worker and one set of ORT sessions per Trainer, reused
 * across rounds.
 */
export class Trainer {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private failure: Error | undefined;
  private count = 0;

  private constructor(readonly spec: ModelSpec, private readonly worker: Worker, private readonly control: Int32Array) {
    worker.on('message', (res: Response) => this.settle(res));
    worker.on('error', (err) => this.fail(new Error(`trainer worker crashed: ${err.message}`)));
    worker.on('exit', (code) => this.fail(new Error(`trainer worker exited (code ${code})`)));
  }

  static async create(spec: ModelSpec, opts: TrainerOptions = {}): Promise<Trainer> {
    const valid = validateSpec(spec);
    const threads = opts.threads ?? 1;
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`Trainer: threads must be a positive integer, got ${threads}`);
    const control = createControl();
    const trainer = new Trainer(valid, new Worker(workerScript(), { workerData: { control } }), control);
    try {
      await trainer.call({ op: 'init', spec: valid, threads });
    } catch (e) {
      await trainer.worker.terminate();
      throw e;
    }
    return trainer;
  }

  /** Number of local samples held by the worker. */
  get samples(): number {
    return this.count;
  }

  /** x [n*inputSize] already normalised, labels [n]; copied once into the worker and kept there. */
  async setData(x: Float32Array, labels: Uint8Array): Promise<void> {
    this.count = (await this.call({ op: 'setData', x, labels })) as number;
  }

  train(task: TrainTask): Promise<TrainResult> {
    return this.call({ op: 'train', task }) as Promise<TrainResult>;
  }

  /** Loss and accuracy of `params` on the local data, or on `data` (e.g. a held-out test set). */
  evaluate(params: Float32Array, data?: { x: Float32Array; labels: Uint8Array }): Promise<EvalResult> {
    return this.call({ op: 'evaluate', params, data }) as Promise<EvalResult>;
  }

  /**
   * Share of the wall time training may compute, from 0 to 1 (default 1, full speed). Applied by
   * the worker between blocks, to the running task at once and to later ones: at 0.5 it rests after
   * each block as long as the block took; at 0 it pauses until the duty cycle is raised again. A
   * task's deadline keeps running while it rests: a task that cannot finish in time returns its
   * partial work with `stoppedEarly: true`. Throws a RangeError outside [0, 1].
   */
  setDutyCycle(d: number): void {
    writeDutyCycle(this.control, d);
  }

  get dutyCycle(): number {
    return readDutyCycle(this.control);
  }

  /** Releases the ORT sessions and ends the worker; pending calls are rejected. Idempotent. A running (or paused) task ends early. */
  async close(): Promise<void> {
    requestStop(this.control);
    if (!this.failure) {
      try {
        await this.call({ op: 'close' });
      } catch (e) {
        log.warn({ err: e }, 'closing the trainer worker');
      }
    }
    this.fail(new Error('trainer is closed'));
    await this.worker.terminate();
  }

  private call(op: Op): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...op, id });
    });
  }

  private settle(res: Response): void {
    const p = this.pending.get(res.id);
    if (!p) return;
    this.pending.delete(res.id);
    if (res.ok) p.resolve(res.value);
    else p.reject(new Error(res.error));
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}
