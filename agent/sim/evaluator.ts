import { select, type Dataset } from '../data';
import type { ModelSpec } from '../model';
import { Trainer } from '../train';
import type { Evaluation } from '../aggregator';

/** Evaluates global models on a held-out set in a worker thread (the aggregator's event loop stays free). */
export async function createEvaluator(spec: ModelSpec, test: Dataset, threads = 1): Promise<{ evaluate: (p: Float32Array) => Promise<Evaluation>; close: () => Promise<void> }> {
  const trainer = await Trainer.create(spec, { threads });
  const all = new Uint32Array(test.n).map((_, i) => i);
  const shard = select(test, all);
  await trainer.setData(shard.x, shard.labels);
  return {
    evaluate: async (params) => {
      const r = await trainer.evaluate(params);
      return { loss: r.loss, accuracy: r.accuracy };
    },
    close: () => trainer.close(),
  };
}
