/**
 * Accuracy vs upload size of the update codecs, side by side in one run: FedAvg in process (no MQTT)
 * on MNIST Dirichlet(0.5) and, when ../shared/data/femnist is present, on FEMNIST one client per
 * writer. Every arm starts from the same model and uses the same partition, client order and
 * training seeds; only the codec differs. Each client's delta is encoded with the real codec (top-k
 * arms keep a per-client ErrorFeedback across rounds), framed with the real wire frames, decoded,
 * and aggregated with the real fedAvg.
 *
 *   npm run bench:compress-accuracy
 *   env: CA_ROUNDS (20), CA_MAX_ROUNDS (rounds a lossy arm may add to reach none's accuracy - 1
 *        point; default 2 x CA_ROUNDS), CA_WORKERS (trainer threads, 2), CA_DATASETS (mnist,femnist),
 *        CA_FEMNIST_CLIENTS (writers per round, default all), CA_ARMS (comma list of arm names),
 *        FEDGATE_DATA_DIR (folder holding femnist/; default ../shared/data next to the repo).
 * Prints a table per dataset, then as the last line one JSON object with every figure and ratio.
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { fedAvg, type ClientUpdate } from '../agent/aggregator/fedavg';
import { backend, chooseCodec, codecLabel, decode, encode, ErrorFeedback, maxIndexBytes, type CodecOptions } from '../agent/compress';
import { loadFemnist, loadMnist, partition, partitionByOwner, select, type Dataset, type Shard } from '../agent/data';
import { initParams, mlp, paramCount, type ModelSpec } from '../agent/model';
import { Trainer } from '../agent/train';
import { encodeFrames, FrameKind, publishPacketBytes, DEFAULT_MAX_PACKET_BYTES, type UpdateMeta } from '../agent/transport';

const ROUNDS = Number(process.env.CA_ROUNDS ?? 20);
const MAX_ROUNDS = Number(process.env.CA_MAX_ROUNDS ?? 2 * ROUNDS);
const WORKERS = Number(process.env.CA_WORKERS ?? 2);
const DATASETS = (process.env.CA_DATASETS ?? 'mnist,femnist').split(',').map((s) => s.trim()).filter(Boolean);
const FEMNIST_CLIENTS = process.env.CA_FEMNIST_CLIENTS ? Number(process.env.CA_FEMNIST_CLIENTS) : undefined;
const DATA_DIR = process.env.FEDGATE_DATA_DIR ?? path.resolve(__dirname, '../../../shared/data');
const EPOCHS = 5;
const BATCH = 32;
const LR = 0.1;
const SEED = 42;
const HIDDEN = 128;
const GOALS = { int8: { ratio: 3.9, loss: 0.3 }, topk: { ratio: 50, loss: 1 } };

interface Arm {
  name: string;
  codec: CodecOptions;
  ef: boolean;
  /** k for rounds 1, 2, … before settling on codec.k (DGC's warm-up of the sparsity). */
  warmupK?: number[];
}

const ALL_ARMS: Arm[] = [
  { name: 'none', codec: { codec: 'none' }, ef: false },
  { name: 'int8', codec: { codec: 'int8' }, ef: false },
  { name: 'int4', codec: { codec: 'int4' }, ef: false },
  { name: 'int4-stoch', codec: { codec: 'int4', stochastic: true }, ef: false },
  { name: 'topk1%+EF', codec: { codec: 'topk', k: 0.01 }, ef: true },
  { name: 'topk1%+int8+EF', codec: { codec: 'topk-int8', k: 0.01 }, ef: true },
  { name: 'topk2%+int8+EF', codec: { codec: 'topk-int8', k: 0.02 }, ef: true },
  // FEMNIST (105 writers, 20 rounds) needs k = 3 % to stay within about a point of float32: what k
  // = 1 % does not send, error feedback delivers ~1/k rounds later, longer than the job.
  { name: 'topk3%+int8+EF', codec: { codec: 'topk-int8', k: 0.03 }, ef: true },
  { name: 'topk10%+int8+EF', codec: { codec: 'topk-int8', k: 0.1 }, ef: true },
  { name: 'topk0.1%+int8+EF', codec: { codec: 'topk-int8', k: 0.001 }, ef: true },
  { name: 'topk1%+int8+EF+warmup', codec: { codec: 'topk-int8', k: 0.01 }, ef: true, warmupK: [0.04, 0.02] },
];
const DEFAULT_ARMS = ['none', 'int8', 'int4', 'topk1%+EF', 'topk1%+int8+EF'];
const ARMS = (process.env.CA_ARMS ? process.env.CA_ARMS.split(',') : DEFAULT_ARMS).map((name) => {
  const arm = ALL_ARMS.find((a) => a.name === name.trim());
  if (!arm) throw new Error(`CA_ARMS: unknown arm '${name}'; known: ${ALL_ARMS.map((a) => a.name).join(', ')}`);
  return arm;
});

interface Client {
  node: string;
  shard: Shard;
}

interface ArmResult {
  arm: string;
  codec: string;
  /** Mean bytes one client uploads per round: encoded payload plus frames (header, metadata, MQTT). */
  bytesPerClientRound: number;
  payloadBytesPerClientRound: number;
  /** Sum over the round's clients. */
  bytesPerRound: number;
  ratio: number;
  accuracy: number;
  /** Mean test accuracy over the last 3 rounds (less noisy than one round). */
  accuracyLast3: number;
  deltaPoints: number;
  deltaPointsLast3: number;
  curve: number[];
  /** First round whose accuracy is >= none's final - 1 point, or null within the rounds run. */
  roundsToTarget: number | null;
  /** Bytes one client uploaded until that round (all rounds' real sizes), or null. */
  bytesToTarget: number | null;
  /** none's bytesToTarget / this arm's. */
  ratioToTarget: number | null;
  seconds: number;
}

/** Round-robin pool of trainers; a trainer keeps the last client's data loaded. */
class Pool {
  private holding: (string | undefined)[];
  private constructor(private readonly trainers: Trainer[]) {
    this.holding = trainers.map(() => undefined);
  }
  static async create(spec: ModelSpec, size: number): Promise<Pool> {
    return new Pool(await Promise.all(Array.from({ length: size }, () => Trainer.create(spec))));
  }
  /** Trains every client on `params`, at most one task per trainer at a time; results in client order. */
  async trainAll(clients: Client[], params: Float32Array, round: number): Promise<{ params: Float32Array; steps: number; loss: number }[]> {
    const out = new Array(clients.length);
    const queues = this.trainers.map((_, w) => clients.map((c, i) => ({ c, i })).filter(({ i }) => i % this.trainers.length === w));
    await Promise.all(queues.map(async (queue, w) => {
      const t = this.trainers[w];
      for (const { c, i } of queue) {
        if (this.holding[w] !== c.node) {
          await t.setData(c.shard.x, c.shard.labels);
          this.holding[w] = c.node;
        }
        const steps = Math.ceil(c.shard.n / BATCH) * EPOCHS;
        // Same seed for a (round, client) in every arm: arms differ only in their codec.
        out[i] = await t.train({ params, steps, batchSize: BATCH, lr: LR, seed: (SEED * 1000003 + round * 7919 + i) >>> 0 });
      }
    }));
    return out;
  }
  async close(): Promise<void> {
    await Promise.all(this.trainers.map((t) => t.close()));
  }
}

/** Wire bytes of one update as the agent publishes it: real frames plus each PUBLISH packet's header. */
function wireBytes(encoded: Uint8Array, meta: UpdateMeta, topic: string): number {
  const overhead = publishPacketBytes(topic, 0, 1) + 4; // as MqttLink.publishFrames
  const frames = encodeFrames(FrameKind.Update, meta as unknown as Record<string, unknown>, encoded, DEFAULT_MAX_PACKET_BYTES - overhead);
  return frames.reduce((sum, f) => sum + publishPacketBytes(topic, f.length, 1), 0);
}

async function runArm(arm: Arm, spec: ModelSpec, clients: Client[], pool: Pool, evaluator: Trainer, target: number | null, log: (s: string) => void): Promise<Omit<ArmResult, 'ratio' | 'deltaPoints' | 'deltaPointsLast3' | 'ratioToTarget'> & { cumulative: number[] }> {
  const started = Date.now();
  const n = paramCount(spec);
  let global: Float32Array = initParams(spec, SEED);
  const feedback = arm.ef ? clients.map(() => new ErrorFeedback(n)) : [];
  const curve: number[] = [];
  let wire = 0;
  let payload = 0;
  let uploads = 0;
  const cumulative: number[] = []; // one client's mean upload, summed over rounds 1..r
  let sum = 0;
  let roundsToTarget: number | null = null;
  const limit = target === null ? ROUNDS : MAX_ROUNDS;
  for (let round = 1; round <= limit; round++) {
    const results = await pool.trainAll(clients, global, round);
    const k = arm.warmupK?.[round - 1] ?? arm.codec.k;
    let roundWire = 0;
    const updates: ClientUpdate[] = results.map((r, i) => {
      let delta = new Float32Array(n);
      for (let j = 0; j < n; j++) delta[j] = r.params[j] - global[j];
      if (arm.ef) delta = feedback[i].compensate(delta);
      const encoded = encode(delta, { ...arm.codec, k, seed: (SEED + round) >>> 0 });
      if (arm.ef) feedback[i].commit(delta, encoded);
      const meta: UpdateMeta = {
        round, taskId: `1700000000000-${round}-${clients[i].node}`, node: clients[i].node, samples: clients[i].shard.n,
        steps: r.steps, loss: r.loss, trainSeconds: 12.345, paramCount: n, codec: arm.codec.codec, stoppedEarly: false,
      };
      const w = wireBytes(encoded, meta, `fedgate/default/node/${clients[i].node}/update`);
      roundWire += w;
      if (round <= ROUNDS) {
        wire += w;
        payload += encoded.length;
        uploads++;
      }
      return { node: clients[i].node, round, samples: clients[i].shard.n, steps: r.steps, delta: decode(encoded), loss: r.loss };
    });
    sum += roundWire / clients.length;
    cumulative.push(sum);
    const next = fedAvg(global, updates);
    if (next) global = next;
    const acc = (await evaluator.evaluate(global)).accuracy;
    curve.push(acc);
    if (target !== null && roundsToTarget === null && acc >= target) roundsToTarget = round;
    log(`  ${arm.name.padEnd(18)} round ${String(round).padStart(2)}  acc ${(100 * acc).toFixed(2)}%`);
    if (round >= ROUNDS && (target === null || roundsToTarget !== null)) break;
  }
  const atR = curve.slice(0, ROUNDS);
  const last3 = atR.slice(-3);
  return {
    arm: arm.name,
    codec: codecLabel(arm.codec),
    bytesPerClientRound: wire / uploads,
    payloadBytesPerClientRound: payload / uploads,
    bytesPerRound: (wire / uploads) * clients.length,
    accuracy: atR[atR.length - 1],
    accuracyLast3: last3.reduce((a, b) => a + b, 0) / last3.length,
    curve,
    roundsToTarget,
    bytesToTarget: roundsToTarget === null ? null : cumulative[roundsToTarget - 1],
    cumulative,
    seconds: (Date.now() - started) / 1000,
  };
}

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
const pts = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(2)}`;

async function runDataset(name: string, train: Dataset, test: Dataset, clients: Client[], log: (s: string) => void) {
  const spec: ModelSpec = { ...mlp(train.features, [HIDDEN], train.classes), name: `${name}-mlp` };
  const n = paramCount(spec);
  const sizes = clients.map((c) => c.shard.n);
  console.log(`\n## ${name}: ${clients.length} clients (samples per client ${Math.min(...sizes)}..${Math.max(...sizes)}), all per round, ` +
    `MLP ${train.features}-${HIDDEN}-${train.classes} (${n} params), ${EPOCHS} local epochs, batch ${BATCH}, lr ${LR}, ${ROUNDS} rounds, seed ${SEED}`);
  const pool = await Pool.create(spec, Math.min(WORKERS, clients.length));
  const evaluator = await Trainer.create(spec);
  const testShard = select(test, Uint32Array.from({ length: test.n }, (_, i) => i));
  await evaluator.setData(testShard.x, testShard.labels);
  const results: ArmResult[] = [];
  try {
    let none: ArmResult | undefined;
    for (const arm of ARMS) {
      // Lossy arms may run past ROUNDS (up to MAX_ROUNDS) to measure how many rounds reach none's final - 1 point.
      const target = none && arm.name !== 'none' ? none.accuracy - 0.01 : null;
      const r = await runArm(arm, spec, clients, pool, evaluator, target, log);
      const ref = none ?? { bytesPerClientRound: r.bytesPerClientRound, accuracy: r.accuracy, accuracyLast3: r.accuracyLast3 };
      const { cumulative, ...rest } = r;
      if (arm.name === 'none') {
        rest.roundsToTarget = rest.curve.findIndex((a) => a >= rest.accuracy - 0.01) + 1;
        rest.bytesToTarget = cumulative[rest.roundsToTarget - 1];
      }
      const full: ArmResult = {
        ...rest,
        ratioToTarget: none && rest.bytesToTarget ? none.bytesToTarget! / rest.bytesToTarget : arm.name === 'none' ? 1 : null,
        ratio: ref.bytesPerClientRound / r.bytesPerClientRound,
        deltaPoints: 100 * (r.accuracy - ref.accuracy),
        deltaPointsLast3: 100 * (r.accuracyLast3 - ref.accuracyLast3),
      };
      if (arm.name === 'none') none = full;
      results.push(full);
      console.log(`  ${arm.name}: ${pct(full.accuracy)} after ${ROUNDS} rounds, ${Math.round(full.bytesPerClientRound)} B per client per round, ${full.seconds.toFixed(0)} s`);
    }
  } finally {
    await pool.close();
    await evaluator.close();
  }

  const none = results.find((r) => r.arm === 'none');
  console.log(`\n${name} — bytes are one client's upload per round on the wire (payload + frame header + metadata + MQTT header); Δ vs none in points`);
  console.log(['arm'.padEnd(18), 'codec'.padEnd(22), 'B/client/round'.padStart(14), 'B/round'.padStart(10), 'ratio'.padStart(7), `acc@${ROUNDS}`.padStart(8), 'Δ pts'.padStart(7), 'last3'.padStart(8), 'Δ last3'.padStart(8), 'rounds→none-1pt'.padStart(16), 'B→none-1pt'.padStart(11), 'ratio'.padStart(7)].join(' '));
  for (const r of results) {
    console.log([
      r.arm.padEnd(18), r.codec.padEnd(22), String(Math.round(r.bytesPerClientRound)).padStart(14), String(Math.round(r.bytesPerRound)).padStart(10),
      `${r.ratio.toFixed(1)}x`.padStart(7), pct(r.accuracy).padStart(8), pts(r.deltaPoints).padStart(7), pct(r.accuracyLast3).padStart(8), pts(r.deltaPointsLast3).padStart(8),
      String(r.roundsToTarget ?? `>${MAX_ROUNDS}`).padStart(16), String(r.bytesToTarget === null ? '-' : Math.round(r.bytesToTarget)).padStart(11),
      (r.ratioToTarget === null ? '-' : `${r.ratioToTarget.toFixed(1)}x`).padStart(7),
    ].join(' '));
  }
  const goals: Record<string, { ratio: number; deltaPoints: number; ratioGoal: number; lossGoal: number; pass: boolean }> = {};
  if (none) {
    for (const r of results) {
      const g = r.arm === 'int8' ? GOALS.int8 : /^topk[13]%/.test(r.arm) ? GOALS.topk : undefined;
      if (!g) continue;
      const pass = r.ratio >= g.ratio && r.deltaPoints >= -g.loss;
      goals[r.arm] = { ratio: r.ratio, deltaPoints: r.deltaPoints, ratioGoal: g.ratio, lossGoal: g.loss, pass };
      const misses = [r.ratio < g.ratio ? 'bytes' : '', r.deltaPoints < -g.loss ? 'accuracy' : ''].filter(Boolean).join(' and ');
      console.log(`goal ${name} ${r.arm}: >= ${g.ratio}x fewer bytes (${r.ratio.toFixed(2)}x) with <= ${g.loss} point loss (${pts(r.deltaPoints)}): ${pass ? 'PASS' : `FAIL (${misses})`}` +
        (r.deltaPoints < -g.loss ? (r.roundsToTarget !== null
          ? ` — reaches none's ${ROUNDS}-round accuracy - 1 point after ${r.roundsToTarget} rounds (none: ${none.roundsToTarget}), with ${r.ratioToTarget!.toFixed(1)}x fewer bytes than none needs to get there`
          : ` — not within none's ${ROUNDS}-round accuracy - 1 point after ${MAX_ROUNDS} rounds`) : ''));
    }
  }
  return { dataset: name, clients: clients.length, paramCount: n, rounds: ROUNDS, arms: results, goals };
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const quiet = process.env.CA_VERBOSE ? false : true;
  const log = (s: string) => { if (!quiet) console.log(s); };
  console.log(`compress-accuracy: backend ${backend}; arms ${ARMS.map((a) => a.name).join(', ')}; ${WORKERS} trainer threads`);
  const out: Record<string, unknown> = { bench: 'compress-accuracy', backend, rounds: ROUNDS, maxRounds: MAX_ROUNDS, epochs: EPOCHS, batchSize: BATCH, lr: LR, seed: SEED };
  const datasets: unknown[] = [];

  if (DATASETS.includes('mnist')) {
    const train = loadMnist('train');
    const test = loadMnist('test');
    const parts = partition(train, { kind: 'dirichlet', alpha: 0.5 }, 10, SEED);
    const clients = parts.map((idx, i) => ({ node: `gw-${String(i).padStart(3, '0')}`, shard: select(train, idx) }));
    datasets.push({ partition: 'dirichlet:0.5', ...(await runDataset('mnist', train, test, clients, log)) });
  }

  if (DATASETS.includes('femnist')) {
    const dir = path.join(DATA_DIR, 'femnist');
    if (!existsSync(path.join(dir, 'train-images-idx3-ubyte.gz'))) {
      console.log(`\n## femnist: skipped — ${dir} not found (set FEDGATE_DATA_DIR to the folder holding femnist/)`);
      out.femnistSkipped = `${dir} not found`;
    } else {
      const train = loadFemnist(dir, 'train');
      const test = loadFemnist(dir, 'test');
      let writers = partitionByOwner(train.owners!);
      if (FEMNIST_CLIENTS && FEMNIST_CLIENTS < writers.length) writers = writers.slice(0, FEMNIST_CLIENTS);
      const clients = writers.map((w) => ({ node: `w${String(w.owner).padStart(3, '0')}`, shard: select(train, w.indices) }));
      datasets.push({ partition: 'one client per writer', ...(await runDataset('femnist', train, test, clients, log)) });
    }
  }

  // What the per-link chooser picks for this model on typical uplinks (2 s upload budget).
  const n = paramCount(mlp(784, [HIDDEN], 10));
  const links: [string, number | null][] = [['LoRa backhaul 50 kbit/s', 50e3 / 8], ['congested Wi-Fi 300 kbit/s', 300e3 / 8], ['cellular 1 Mbit/s', 1e6 / 8], ['Wi-Fi 10 Mbit/s', 10e6 / 8], ['unknown', null]];
  console.log(`\nchooseCodec for the ${n}-param MNIST model, 2 s upload budget:`);
  const choices = links.map(([link, speed]) => {
    const d = chooseCodec({ paramCount: n, upBytesPerSecond: speed, uploadBudgetSeconds: 2 });
    console.log(`  ${link.padEnd(26)} -> ${codecLabel(d.codec).padEnd(20)} ${String(d.expectedBytes).padStart(7)} B  ${d.reason}`);
    return { link, upBytesPerSecond: speed, codec: codecLabel(d.codec), expectedBytes: d.expectedBytes, expectedSeconds: d.expectedSeconds };
  });

  // Why top-k lands near 70-170x here, not DGC's 270-600x: the value and index cost bounds the ratio.
  const ceil = (bytesPerKept: number, k: number) => 4 / (k * bytesPerKept);
  const idx1 = maxIndexBytes(n, Math.round(0.01 * n)) / Math.round(0.01 * n);
  console.log(`\ntop-k ceiling: a float32 costs 4 B; a kept value costs its index (a LEB128 gap: at most ${idx1.toFixed(2)} B at k=1% of ${n}) + 4 B (topk) or 1 B + a 4 B scale per 256 (topk-int8), ` +
    `so at k=1% the ratio is at least ${ceil(4 + idx1, 0.01).toFixed(0)}x (topk) and ${ceil(1 + idx1 + 4 / 256, 0.01).toFixed(0)}x (topk-int8) before headers; ` +
    `DGC's 270-600x needs k=0.1% on large networks trained for many iterations, which on these 0.1M-parameter models after ${ROUNDS} rounds costs points (see topk0.1%+int8+EF with CA_ARMS).`);
  out.datasets = datasets;
  out.chooser = choices;
  out.seconds = (Date.now() - t0) / 1000;
  console.log(`\ntotal ${(out.seconds as number).toFixed(0)} s`);
  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
