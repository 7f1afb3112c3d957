import { parentPort, workerData } from 'node:worker_threads';
import { logger } from '../log';
import { validateSpec } from '../model';
import { TrainEngine } from './engine';
import { Pacer } from './pace';
import type { Request, Response } from './types';

/** The trainer's worker thread: session.run is synchronous, so it must not run on the main thread. */
const log = logger('train-worker');
let engine: TrainEngine | undefined;
/** The duty cycle shared with the Trainer (absent when the worker is started without one). */
const control = (workerData as { control?: Int32Array } | undefined)?.control;
const pacer = control ? new Pacer(control) : undefined;

async function handle(req: Request): Promise<{ value: unknown; transfer?: ArrayBuffer[] }> {
  if (req.op === 'init') {
    engine = await TrainEngine.create(validateSpec(req.spec), req.threads);
    log.debug({ model: req.spec.name, threads: req.threads }, 'ORT sessions ready');
    return { value: null };
  }
  if (!engine) throw new Error(`trainer worker got '${req.op}' before init`);
  switch (req.op) {
    case 'setData':
      return { value: engine.setData(req.x, req.labels) };
    case 'train': {
      const result = await engine.train(req.task, pacer);
      return { value: result, transfer: [result.params.buffer as ArrayBuffer] };
    }
    case 'evaluate':
      return { value: await engine.evaluate(req.params, req.data) };
    case 'close':
      await engine.close();
      engine = undefined;
      return { value: null };
  }
}

// Requests are handled one at a time, in order: a train and an evaluate never interleave.
let queue: Promise<void> = Promise.resolve();
parentPort!.on('message', (req: Request) => {
  queue = queue.then(async () => {
    let res: Response;
    let transfer: ArrayBuffer[] = [];
    try {
      const out = await handle(req);
      res = { id: req.id, ok: true, value: out.value };
      transfer = out.transfer ?? [];
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      res = { id: req.id, ok: false, error: msg.startsWith(req.op) ? msg : `${req.op} failed: ${msg}` };
    }
    parentPort!.postMessage(res, transfer);
  });
});
