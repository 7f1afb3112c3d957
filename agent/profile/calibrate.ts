import { initParams } from '../model';
import type { Trainer } from '../train';

export interface CalibrateOptions {
  /** Timed run length (default 1 s); the run stops at this deadline. */
  seconds?: number;
  /** Steps run first and not timed: ORT's first runs allocate and pack (default 16). */
  warmupSteps?: number;
  batchSize?: number;
  seed?: number;
}

export interface Calibration {
  /** Training throughput of this model on this gateway: samples / compute time (rests excluded). */
  samplesPerSecond: number;
  samples: number;
  steps: number;
  /** Compute time of the timed run. */
  seconds: number;
  batchSize: number;
  model: string;
}

/**
 * Measures training throughput through the real Trainer, on the data it already holds: a short
 * warm-up, then a run bounded by `seconds`. Throughput is taken over the worker's busy time, so a
 * duty cycle set by the HostGuard does not make the hardware look slower than it is (CPU contention
 * does, as it should: that is what training will get). The model parameters are fresh ones; the
 * trainer's data and sessions are untouched. Throws if the trainer is paused or nothing ran in time.
 */
export async function calibrateTraining(trainer: Trainer, opts: CalibrateOptions = {}): Promise<Calibration> {
  if (trainer.samples === 0) throw new Error('calibrateTraining: the trainer holds no data (call setData first)');
  const batchSize = Math.min(opts.batchSize ?? 32, trainer.samples);
  const seed = opts.seed ?? 1;
  const seconds = opts.seconds ?? 1;
  if (!(seconds > 0)) throw new Error(`calibrateTraining: seconds must be above 0, got ${seconds}`);
  if (trainer.dutyCycle === 0) throw new Error('calibrateTraining: the trainer is paused (duty cycle 0)');
  const params = initParams(trainer.spec, seed);
  const task = { params, batchSize, lr: 0.01, seed };
  // Bounded too: a trainer paused by its duty cycle must not hang the calibration.
  await trainer.train({ ...task, steps: opts.warmupSteps ?? 16, deadlineSeconds: Math.max(2, 2 * seconds) });
  // Far more steps than can run: the deadline ends the run.
  const res = await trainer.train({ ...task, steps: 10_000_000, deadlineSeconds: seconds });
  if (res.samples === 0 || !(res.busySeconds > 0)) throw new Error('calibrateTraining: no step completed within the time allowed');
  return { samplesPerSecond: res.samples / res.busySeconds, samples: res.samples, steps: res.steps, seconds: res.busySeconds, batchSize, model: trainer.spec.name };
}

export type Direction = 'up' | 'down';

export interface LinkEstimate {
  upBytesPerSecond: number | null;
  downBytesPerSecond: number | null;
}

export interface LinkEstimatorOptions {
  /** EWMA weight of a new full-weight measurement (default 0.3: about the last 5 transfers matter). */
  alpha?: number;
  /** Transfers below this are ignored: latency, not bandwidth, sets their time (default 16 KiB). */
  minBytes?: number;
  /** Transfers of at least this size count fully; smaller ones count pro rata (default 1 MiB). */
  fullWeightBytes?: number;
  /** Guesses used until something is measured (null = unknown, the default). */
  prior?: Partial<LinkEstimate>;
}

interface Track { value: number | null; measured: boolean }

/**
 * Link throughput smoothed from the transfers the agent really makes (model download, update
 * upload): `observe(direction, bytes, seconds)`. An exponentially weighted moving average, each
 * measurement weighted by alpha × min(1, bytes / fullWeightBytes), so a 100 KB heartbeat-sized
 * transfer moves the estimate ten times less than a 1 MB update. The first measurement replaces a
 * prior (weighted the same way); nonsense (non-finite, zero or negative bytes or duration) is ignored.
 */
export class LinkEstimator {
  private readonly alpha: number;
  private readonly minBytes: number;
  private readonly fullWeightBytes: number;
  private readonly tracks: Record<Direction, Track>;

  constructor(opts: LinkEstimatorOptions = {}) {
    this.alpha = opts.alpha ?? 0.3;
    if (!(this.alpha > 0 && this.alpha <= 1)) throw new RangeError(`LinkEstimator: alpha must be in (0, 1], got ${opts.alpha}`);
    this.minBytes = opts.minBytes ?? 16 * 1024;
    this.fullWeightBytes = Math.max(this.minBytes, opts.fullWeightBytes ?? 1024 * 1024);
    const prior = (v: number | null | undefined): Track => ({ value: typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : null, measured: false });
    this.tracks = { up: prior(opts.prior?.upBytesPerSecond), down: prior(opts.prior?.downBytesPerSecond) };
  }

  /** Records a transfer; returns whether it was used. */
  observe(direction: Direction, bytes: number, seconds: number): boolean {
    const track = this.tracks[direction];
    if (!track) throw new RangeError(`LinkEstimator: direction must be 'up' or 'down', got ${direction}`);
    if (!(Number.isFinite(bytes) && Number.isFinite(seconds) && seconds > 0 && bytes >= this.minBytes)) return false;
    const rate = bytes / seconds;
    const weight = Math.min(1, bytes / this.fullWeightBytes);
    if (track.value === null) track.value = rate;
    else if (!track.measured) track.value += weight * (rate - track.value);
    else track.value += this.alpha * weight * (rate - track.value);
    track.measured = true;
    return true;
  }

  get estimate(): LinkEstimate {
    return { upBytesPerSecond: this.tracks.up.value, downBytesPerSecond: this.tracks.down.value };
  }

  /** Whether the estimate in this direction comes from real transfers (not only the prior). */
  measured(direction: Direction): boolean {
    return this.tracks[direction].measured;
  }
}
