/**
 * The gateway protects itself: pure decision of how hard training may run, given what the host
 * is doing. Most restrictive condition wins; each condition has hysteresis (it ends only once the
 * reading is back past its threshold by a margin), so the decision does not flap. An unknown
 * reading (null) never throttles nor pauses: a VM without a temperature sensor trains normally.
 */

export type GuardMode = 'run' | 'throttle' | 'pause';
export type GuardCondition = 'load' | 'memory' | 'temperature' | 'battery';

export interface GuardCause {
  condition: GuardCondition;
  level: 'throttle' | 'pause';
  /** Duty cycle this condition allows (0 for a pause). */
  dutyCycle: number;
  detail: string;
}

export interface GuardDecision {
  mode: GuardMode;
  /** For Trainer.setDutyCycle: 1 run, (0, 1) throttle, 0 pause. */
  dutyCycle: number;
  /** The conditions that hold (empty when running). */
  causes: GuardCause[];
}

/** What the guard watches; null = unknown. */
export interface GuardReading {
  /** CPU share used by other processes (total minus this process, its worker threads included), 0..1. */
  otherLoad: number | null;
  /** Effective available memory (the cgroup headroom where it is tighter than the host's). */
  freeMemoryBytes: number | null;
  temperatureC: number | null;
  batteryPercent: number | null;
  /** true: running on battery; false: on external power or no battery. */
  onBattery: boolean | null;
}

export interface GuardThresholds {
  /** Other processes' CPU share above which training is throttled (default 0.8). */
  maxOtherLoad: number;
  /** Other processes' CPU share at or above which training pauses (default 0.95). */
  pauseOtherLoad: number;
  /** A load throttle or pause ends only once load is this far below its threshold (default 0.1). */
  loadHysteresis: number;
  /** Duty cycle at maxOtherLoad; it falls linearly to minDutyCycle at pauseOtherLoad (defaults 0.75, 0.25). */
  maxThrottleDutyCycle: number;
  minDutyCycle: number;
  /** Pause below this much available memory (default 128 MiB)… */
  minFreeMemoryBytes: number;
  /** …until it is back above minFreeMemoryBytes × (1 + this) (default 0.25). */
  memoryHysteresis: number;
  /** Throttle (duty `temperatureDutyCycle`, default 0.5) at or above this CPU temperature (default 75 °C)… */
  throttleTemperatureC: number;
  temperatureDutyCycle: number;
  /** …pause at or above this one (default 85 °C); both end this many degrees lower (default 5). */
  maxTemperatureC: number;
  temperatureHysteresis: number;
  /** On battery, pause below this charge (default 20 %) until it is this much higher or on external power (default 5). */
  minBatteryPercent: number;
  batteryHysteresis: number;
}

export const DEFAULT_GUARD: GuardThresholds = {
  maxOtherLoad: 0.8,
  pauseOtherLoad: 0.95,
  loadHysteresis: 0.1,
  maxThrottleDutyCycle: 0.75,
  minDutyCycle: 0.25,
  minFreeMemoryBytes: 128 * 1024 * 1024,
  memoryHysteresis: 0.25,
  throttleTemperatureC: 75,
  temperatureDutyCycle: 0.5,
  maxTemperatureC: 85,
  temperatureHysteresis: 5,
  minBatteryPercent: 20,
  batteryHysteresis: 5,
};

export const RUN: GuardDecision = Object.freeze({ mode: 'run', dutyCycle: 1, causes: [] }) as GuardDecision;

/** Defaults merged with `partial`, checked for consistency (RangeError naming the bad field). */
export function guardThresholds(partial: Partial<GuardThresholds> = {}): GuardThresholds {
  const t = { ...DEFAULT_GUARD, ...partial };
  const fail = (why: string) => {
    throw new RangeError(`guard thresholds: ${why}`);
  };
  for (const [k, v] of Object.entries(t)) if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) fail(`${k} must be a number >= 0, got ${v}`);
  if (!(t.maxOtherLoad < t.pauseOtherLoad)) fail(`maxOtherLoad (${t.maxOtherLoad}) must be below pauseOtherLoad (${t.pauseOtherLoad})`);
  if (t.pauseOtherLoad > 1) fail(`pauseOtherLoad must be at most 1, got ${t.pauseOtherLoad}`);
  if (!(t.minDutyCycle > 0 && t.minDutyCycle <= t.maxThrottleDutyCycle && t.maxThrottleDutyCycle < 1)) fail('need 0 < minDutyCycle <= maxThrottleDutyCycle < 1');
  if (!(t.temperatureDutyCycle > 0 && t.temperatureDutyCycle < 1)) fail('temperatureDutyCycle must be in (0, 1)');
  if (!(t.throttleTemperatureC <= t.maxTemperatureC)) fail('throttleTemperatureC must not exceed maxTemperatureC');
  return t;
}

/** Duty cycles are kept on a 0.05 grid, and a throttle keeps its duty cycle unless the new one differs by 0.1 or more. */
const GRID = 0.05;
const DUTY_STEP = 0.1;
const onGrid = (d: number) => Number((Math.round(d / GRID) * GRID).toFixed(2));

type Level = GuardCause['level'] | null;

const levelOf = (prev: GuardDecision, c: GuardCondition): Level => prev.causes.find((x) => x.condition === c)?.level ?? null;

function loadCause(was: Level, load: number | null, t: GuardThresholds): GuardCause | null {
  if (load === null) return null;
  const pct = `${Math.round(load * 100)}%`;
  if (load >= t.pauseOtherLoad || (was === 'pause' && load > t.pauseOtherLoad - t.loadHysteresis)) {
    return { condition: 'load', level: 'pause', dutyCycle: 0, detail: `other processes use ${pct} of the CPU (pause at ${t.pauseOtherLoad * 100}%)` };
  }
  if (load > t.maxOtherLoad || (was !== null && load > t.maxOtherLoad - t.loadHysteresis)) {
    const span = t.pauseOtherLoad - t.maxOtherLoad;
    const x = Math.min(1, Math.max(0, (load - t.maxOtherLoad) / span));
    const duty = onGrid(t.maxThrottleDutyCycle - x * (t.maxThrottleDutyCycle - t.minDutyCycle));
    return { condition: 'load', level: 'throttle', dutyCycle: duty, detail: `other processes use ${pct} of the CPU (throttle above ${t.maxOtherLoad * 100}%)` };
  }
  return null;
}

function memoryCause(was: Level, free: number | null, t: GuardThresholds): GuardCause | null {
  if (free === null) return null;
  const low = free < t.minFreeMemoryBytes || (was !== null && free < t.minFreeMemoryBytes * (1 + t.memoryHysteresis));
  return low ? { condition: 'memory', level: 'pause', dutyCycle: 0, detail: `${Math.round(free / 1048576)} MiB available (minimum ${Math.round(t.minFreeMemoryBytes / 1048576)} MiB)` } : null;
}

function temperatureCause(was: Level, temp: number | null, t: GuardThresholds): GuardCause | null {
  if (temp === null) return null;
  const h = t.temperatureHysteresis;
  if (temp >= t.maxTemperatureC || (was === 'pause' && temp > t.maxTemperatureC - h)) {
    return { condition: 'temperature', level: 'pause', dutyCycle: 0, detail: `CPU at ${temp} °C (pause at ${t.maxTemperatureC} °C)` };
  }
  if (temp >= t.throttleTemperatureC || (was !== null && temp > t.throttleTemperatureC - h)) {
    return { condition: 'temperature', level: 'throttle', dutyCycle: t.temperatureDutyCycle, detail: `CPU at ${temp} °C (throttle at ${t.throttleTemperatureC} °C)` };
  }
  return null;
}

function batteryCause(was: Level, percent: number | null, onBattery: boolean | null, t: GuardThresholds): GuardCause | null {
  if (onBattery !== true || percent === null) return null;
  const low = percent < t.minBatteryPercent || (was !== null && percent < t.minBatteryPercent + t.batteryHysteresis);
  return low ? { condition: 'battery', level: 'pause', dutyCycle: 0, detail: `on battery at ${percent}% (minimum ${t.minBatteryPercent}%)` } : null;
}

/** Pure: the next decision from the previous one (for hysteresis; RUN at first) and a reading. */
export function decide(prev: GuardDecision, r: GuardReading, t: GuardThresholds = DEFAULT_GUARD): GuardDecision {
  const causes = [
    loadCause(levelOf(prev, 'load'), r.otherLoad, t),
    memoryCause(levelOf(prev, 'memory'), r.freeMemoryBytes, t),
    temperatureCause(levelOf(prev, 'temperature'), r.temperatureC, t),
    batteryCause(levelOf(prev, 'battery'), r.batteryPercent, r.onBattery, t),
  ].filter((c): c is GuardCause => c !== null);
  if (causes.length === 0) return RUN;
  let duty = Math.min(...causes.map((c) => c.dutyCycle));
  if (duty === 0) return { mode: 'pause', dutyCycle: 0, causes };
  if (prev.mode === 'throttle' && Math.abs(duty - prev.dutyCycle) < DUTY_STEP - 1e-9) duty = prev.dutyCycle;
  return { mode: 'throttle', dutyCycle: duty, causes };
}

/** Whether two decisions are the same: mode, duty cycle and the conditions (with their levels) behind them. */
export function sameDecision(a: GuardDecision, b: GuardDecision): boolean {
  const key = (d: GuardDecision) => d.causes.map((c) => `${c.condition}:${c.level}`).sort().join(',');
  return a.mode === b.mode && a.dutyCycle === b.dutyCycle && key(a) === key(b);
}
