import { EventEmitter } from 'node:events';
import si from 'systeminformation';
import { logger } from '../log';
import { readCgroupLimits } from './cgroup';
import { LoadSampler } from './cpu-load';
import { type GuardDecision, type GuardReading, type GuardThresholds, RUN, decide, guardThresholds, sameDecision } from './guard-decide';
import { type HardwareProfile, buildHardware } from './hardware';

const log = logger('guard');

/** Pure: the guard's view of a hardware profile. */
export function readingFromHardware(hw: Pick<HardwareProfile, 'load' | 'memory' | 'temperatureC' | 'battery'>): GuardReading {
  return {
    otherLoad: hw.load.other,
    freeMemoryBytes: hw.memory.availableBytes,
    temperatureC: hw.temperatureC,
    batteryPercent: hw.battery.percent,
    onBattery: hw.battery.onAc === null ? null : !hw.battery.onAc,
  };
}

/**
 * One reading: other processes' CPU share since the sampler's previous sample (null on the first),
 * effective free memory, temperature, battery. The fast systeminformation calls only (< 30 ms).
 */
export async function readGuard(sampler: LoadSampler): Promise<GuardReading> {
  const load = sampler.sample();
  const quiet = <T>(p: Promise<T>) => p.catch(() => null);
  const [mem, temperature, battery] = await Promise.all([quiet(si.mem()), quiet(si.cpuTemperature()), quiet(si.battery())]);
  return readingFromHardware(buildHardware({ mem, temperature, battery, cgroup: readCgroupLimits(), load }));
}

export interface HostGuardOptions {
  thresholds?: Partial<GuardThresholds>;
  /** Time between readings (default 2 s); CPU load is measured over this interval. */
  intervalSeconds?: number;
  /** A trainer (or anything with setDutyCycle) to apply each decision to. */
  trainer?: { setDutyCycle(d: number): void };
  /** Reading source (tests inject one); receives the guard's load sampler. */
  read?: (sampler: LoadSampler) => Promise<GuardReading>;
}

/**
 * Watches the host every interval and decides whether training may run, must be throttled (duty
 * cycle) or must pause (see decide). Emits `'state' (decision, reading)` when the decision changes,
 * `'reading' (reading, decision)` after every reading, and applies the duty cycle to `trainer` if
 * given. `busy` is what the agent reports in its heartbeat.
 */
export class HostGuard extends EventEmitter<{ state: [GuardDecision, GuardReading]; reading: [GuardReading, GuardDecision] }> {
  readonly thresholds: GuardThresholds;
  private readonly sampler = new LoadSampler();
  private readonly read: (sampler: LoadSampler) => Promise<GuardReading>;
  private decision: GuardDecision = RUN;
  private last: GuardReading | null = null;
  private timer?: NodeJS.Timeout;
  private checking?: Promise<GuardDecision>;
  private trainer?: { setDutyCycle(d: number): void };

  constructor(private readonly opts: HostGuardOptions = {}) {
    super();
    this.trainer = opts.trainer;
    this.thresholds = guardThresholds(opts.thresholds);
    this.read = opts.read ?? readGuard;
    const every = opts.intervalSeconds ?? 2;
    if (!(every > 0)) throw new RangeError(`HostGuard: intervalSeconds must be above 0, got ${every}`);
  }

  get state(): GuardDecision {
    return this.decision;
  }

  get lastReading(): GuardReading | null {
    return this.last;
  }

  /** Applies decisions to `trainer` from now on, starting with the current one (e.g. after the agent made a new Trainer). */
  attach(trainer: { setDutyCycle(d: number): void } | undefined): void {
    this.trainer = trainer;
    trainer?.setDutyCycle(this.decision.dutyCycle);
  }

  /** Training is throttled or paused: the host needs its resources. */
  get busy(): boolean {
    return this.decision.mode !== 'run';
  }

  /** Starts the periodic readings (the first one sets the CPU baseline, so load is known from the second). */
  start(): void {
    if (this.timer) return;
    void this.check().catch(() => undefined);
    this.timer = setInterval(() => void this.check().catch((err) => log.warn({ err: (err as Error).message }, 'guard reading failed')), (this.opts.intervalSeconds ?? 2) * 1000);
    this.timer.unref();
  }

  /** Stops reading; the last decision stays in force (call trainer.setDutyCycle(1) to release it). */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Takes a reading now and decides (concurrent calls share one reading). */
  check(): Promise<GuardDecision> {
    this.checking ??= this.read(this.sampler)
      .then((reading) => this.apply(reading))
      .finally(() => (this.checking = undefined));
    return this.checking;
  }

  private apply(reading: GuardReading): GuardDecision {
    const next = decide(this.decision, reading, this.thresholds);
    const changed = !sameDecision(this.decision, next);
    this.decision = next;
    this.last = reading;
    if (changed) {
      this.trainer?.setDutyCycle(next.dutyCycle);
      log.info({ mode: next.mode, dutyCycle: next.dutyCycle, causes: next.causes.map((c) => c.detail) }, `training ${next.mode}`);
      this.emit('state', next, reading);
    }
    this.emit('reading', reading, next);
    return next;
  }
}
