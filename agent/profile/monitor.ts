import { EventEmitter } from 'node:events';
import { logger } from '../log';
import { type Direction, LinkEstimator } from './calibrate';
import { LoadSampler } from './cpu-load';
import { type HardwareProfile, readHardware } from './hardware';
import { DEFAULT_MATERIAL, type MaterialThresholds, type Profile, makeProfile, materialChange } from './profile';

const log = logger('profile');

export interface ProfileMonitorOptions {
  node?: string;
  /** How often hardware and load are re-read (default 30 s); load is the average over this interval. */
  refreshSeconds?: number;
  /** Re-emit an unchanged profile after this long, so the retained copy's ts stays fresh (default 600 s). */
  republishSeconds?: number;
  material?: Partial<MaterialThresholds>;
  link?: LinkEstimator;
  /** EWMA weight of a real training run in the throughput estimate (default 0.3). */
  throughputAlpha?: number;
  /** Hardware reader (tests inject one); it receives the monitor's load sampler. */
  read?: (sampler: LoadSampler) => Promise<HardwareProfile>;
  now?: () => number;
}

/**
 * Keeps this gateway's profile current. Emits `'change' (profile, reasons)` on start ('initial'),
 * whenever a refresh or a new measurement differs materially from the last emitted profile (see
 * materialChange), and at least every `republishSeconds` ('periodic'). The agent publishes each one
 * retained on its profile topic. Training throughput comes from calibrateTraining
 * (setTrainThroughput) and from real training runs (observeTraining); link throughput from real
 * transfers (observeTransfer).
 */
export class ProfileMonitor extends EventEmitter<{ change: [Profile, string[]] }> {
  readonly link: LinkEstimator;
  private readonly sampler = new LoadSampler();
  private readonly material: MaterialThresholds;
  private readonly read: (sampler: LoadSampler) => Promise<HardwareProfile>;
  private readonly now: () => number;
  private timer?: NodeJS.Timeout;
  private hardware?: HardwareProfile;
  private latest: Profile | null = null;
  private emitted: Profile | null = null;
  private throughput: number | null = null;
  private model: string | null = null;
  private refreshing?: Promise<Profile>;

  constructor(private readonly opts: ProfileMonitorOptions = {}) {
    super();
    this.link = opts.link ?? new LinkEstimator();
    this.material = { ...DEFAULT_MATERIAL, ...opts.material };
    this.read = opts.read ?? ((sampler) => readHardware({ sampler }));
    this.now = opts.now ?? Date.now;
  }

  /** The latest profile read (emitted or not), null before the first read. */
  get profile(): Profile | null {
    return this.latest;
  }

  /** Reads the profile, emits it ('initial') and refreshes it every refreshSeconds until stop(). */
  async start(): Promise<Profile> {
    const first = await this.refresh();
    if (!this.timer) {
      this.timer = setInterval(() => void this.refresh().catch((err) => log.warn({ err: (err as Error).message }, 'profile refresh failed')), (this.opts.refreshSeconds ?? 30) * 1000);
      this.timer.unref();
    }
    return first;
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Re-reads hardware and load now (concurrent calls share one read). */
  refresh(): Promise<Profile> {
    this.refreshing ??= this.read(this.sampler)
      .then((hw) => {
        this.hardware = hw;
        return this.update();
      })
      .finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  /** Sets the measured training throughput (e.g. from calibrateTraining) for `model`; null forgets it. */
  setTrainThroughput(samplesPerSecond: number | null, model: string | null): void {
    this.throughput = samplesPerSecond !== null && Number.isFinite(samplesPerSecond) && samplesPerSecond > 0 ? samplesPerSecond : null;
    this.model = this.throughput === null ? null : model;
    this.recheck();
  }

  /** Folds a real training run (samples over its busy seconds) into the throughput estimate; another model starts afresh. */
  observeTraining(model: string, samples: number, busySeconds: number): void {
    if (!(samples > 0 && busySeconds > 0 && Number.isFinite(samples / busySeconds))) return;
    const rate = samples / busySeconds;
    const alpha = this.opts.throughputAlpha ?? 0.3;
    this.throughput = this.model === model && this.throughput !== null ? this.throughput + alpha * (rate - this.throughput) : rate;
    this.model = model;
    this.recheck();
  }

  /** A real transfer of `bytes` in `seconds` (see LinkEstimator). */
  observeTransfer(direction: Direction, bytes: number, seconds: number): void {
    if (this.link.observe(direction, bytes, seconds)) this.recheck();
  }

  private recheck(): void {
    if (this.hardware) this.update();
  }

  private update(): Profile {
    const next = makeProfile(this.hardware!, {
      node: this.opts.node,
      ts: this.now(),
      trainSamplesPerSecond: this.throughput,
      trainModel: this.model,
      link: this.link.estimate,
    });
    this.latest = next;
    const reasons = materialChange(this.emitted, next, this.material);
    if (reasons.length === 0 && this.emitted && next.ts - this.emitted.ts >= (this.opts.republishSeconds ?? 600) * 1000) reasons.push('periodic');
    if (reasons.length > 0) {
      this.emitted = next;
      this.emit('change', next, reasons);
    }
    return next;
  }
}
