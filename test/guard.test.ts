import { describe, expect, it } from 'vitest';
import {
  type GuardDecision, type GuardReading, DEFAULT_GUARD, HostGuard, RUN, buildHardware, decide, guardThresholds, readingFromHardware,
} from '../agent/profile';

const MiB = 1024 * 1024;
const calm: GuardReading = { otherLoad: 0.1, freeMemoryBytes: 2048 * MiB, temperatureC: 50, batteryPercent: null, onBattery: false };
const unknown: GuardReading = { otherLoad: null, freeMemoryBytes: null, temperatureC: null, batteryPercent: null, onBattery: null };
const r = (over: Partial<GuardReading>): GuardReading => ({ ...calm, ...over });

/** Runs readings through decide from RUN and returns every decision. */
function run(readings: Partial<GuardReading>[], start: GuardDecision = RUN): GuardDecision[] {
  const out: GuardDecision[] = [];
  let d = start;
  for (const reading of readings) out.push((d = decide(d, r(reading))));
  return out;
}
const modes = (ds: GuardDecision[]) => ds.map((d) => `${d.mode}:${d.dutyCycle}`);

describe('decide (pure)', () => {
  it('runs when all is calm, and when nothing is known', () => {
    expect(decide(RUN, calm)).toEqual(RUN);
    expect(decide(RUN, unknown)).toEqual(RUN);
    // Unknown readings also end conditions they had started: nothing justifies holding training back.
    const paused = decide(RUN, r({ otherLoad: 0.99, freeMemoryBytes: 10 * MiB, temperatureC: 95, batteryPercent: 3, onBattery: true }));
    expect(paused.mode).toBe('pause');
    expect(decide(paused, unknown)).toEqual(RUN);
  });

  describe('CPU load of other processes', () => {
    it('throttles above maxOtherLoad with a duty cycle falling toward pauseOtherLoad, pauses there', () => {
      expect(modes([0.5, 0.8].map((otherLoad) => decide(RUN, r({ otherLoad }))))).toEqual(['run:1', 'run:1']);
      expect(modes([0.81, 0.85, 0.9, 0.94, 0.95, 1].map((otherLoad) => decide(RUN, r({ otherLoad }))))).toEqual([
        'throttle:0.7', 'throttle:0.6', 'throttle:0.4', 'throttle:0.3', 'pause:0', 'pause:0',
      ]);
      const d = decide(RUN, r({ otherLoad: 0.9 }));
      expect(d.causes).toEqual([{ condition: 'load', level: 'throttle', dutyCycle: 0.4, detail: expect.stringContaining('90%') }]);
    });

    it('hysteresis: a throttle ends only below maxOtherLoad − 0.1, a pause only below pauseOtherLoad − 0.1', () => {
      expect(modes(run([{ otherLoad: 0.85 }, { otherLoad: 0.75 }, { otherLoad: 0.71 }, { otherLoad: 0.7 }]))).toEqual([
        'throttle:0.6', 'throttle:0.75', 'throttle:0.75', 'run:1',
      ]);
      expect(modes(run([{ otherLoad: 0.97 }, { otherLoad: 0.9 }, { otherLoad: 0.86 }, { otherLoad: 0.85 }, { otherLoad: 0.6 }]))).toEqual([
        'pause:0', 'pause:0', 'pause:0', 'throttle:0.6', 'run:1',
      ]);
    });

    it('does not flap around the threshold, and keeps its duty cycle through small wobbles', () => {
      const wobble = Array.from({ length: 40 }, (_, i) => ({ otherLoad: 0.8 + (i % 2 ? 0.02 : -0.02) }));
      const ds = run(wobble);
      const changes = ds.filter((d, i) => i > 0 && d.mode !== ds[i - 1].mode).length;
      expect(changes).toBe(1); // run, then throttle for good
      expect(modes(run([{ otherLoad: 0.85 }, { otherLoad: 0.86 }, { otherLoad: 0.84 }, { otherLoad: 0.87 }]))).toEqual([
        'throttle:0.6', 'throttle:0.6', 'throttle:0.6', 'throttle:0.5',
      ]);
    });

    it('unknown load (the first sample) never throttles', () => {
      expect(decide(RUN, r({ otherLoad: null }))).toEqual(RUN);
    });
  });

  it('memory: pauses below minFreeMemoryBytes, resumes only 25% above it', () => {
    const min = DEFAULT_GUARD.minFreeMemoryBytes;
    expect(modes(run([{ freeMemoryBytes: min + 1 }, { freeMemoryBytes: min - 1 }, { freeMemoryBytes: min * 1.2 }, { freeMemoryBytes: min * 1.25 }]))).toEqual([
      'run:1', 'pause:0', 'pause:0', 'run:1',
    ]);
    expect(decide(RUN, r({ freeMemoryBytes: 0 })).causes[0]).toMatchObject({ condition: 'memory', level: 'pause' });
    expect(decide(RUN, r({ freeMemoryBytes: null }))).toEqual(RUN);
  });

  it('temperature: throttles at 75 °C, pauses at 85 °C, each ends 5 °C lower; unknown never pauses', () => {
    expect(modes(run([{ temperatureC: 74 }, { temperatureC: 75 }, { temperatureC: 85 }, { temperatureC: 81 }, { temperatureC: 80 }, { temperatureC: 71 }, { temperatureC: 70 }]))).toEqual([
      'run:1', 'throttle:0.5', 'pause:0', 'pause:0', 'throttle:0.5', 'throttle:0.5', 'run:1',
    ]);
    const hot = decide(RUN, r({ temperatureC: 99 }));
    expect(hot.mode).toBe('pause');
    expect(decide(hot, r({ temperatureC: null }))).toEqual(RUN);
    expect(decide(RUN, r({ temperatureC: null, otherLoad: 0.2 }))).toEqual(RUN);
  });

  it('battery: pauses on battery below 20 %, resumes at 25 % or on external power; unknown never pauses', () => {
    expect(modes(run([{ onBattery: true, batteryPercent: 30 }, { onBattery: true, batteryPercent: 19 }, { onBattery: true, batteryPercent: 24 }, { onBattery: true, batteryPercent: 25 }]))).toEqual([
      'run:1', 'pause:0', 'pause:0', 'run:1',
    ]);
    const low = decide(RUN, r({ onBattery: true, batteryPercent: 5 }));
    expect(low.mode).toBe('pause');
    expect(decide(low, r({ onBattery: false, batteryPercent: 5 }))).toEqual(RUN); // plugged in
    expect(decide(RUN, r({ onBattery: null, batteryPercent: 5 }))).toEqual(RUN);
    expect(decide(RUN, r({ onBattery: true, batteryPercent: null }))).toEqual(RUN);
  });

  it('the most restrictive condition wins and every cause is listed', () => {
    const both = decide(RUN, r({ otherLoad: 0.85, temperatureC: 78 }));
    expect(both.mode).toBe('throttle');
    expect(both.dutyCycle).toBe(0.5); // min(load 0.6, temperature 0.5)
    expect(both.causes.map((c) => c.condition)).toEqual(['load', 'temperature']);
    const all = decide(RUN, r({ otherLoad: 0.85, temperatureC: 78, freeMemoryBytes: MiB }));
    expect(all.mode).toBe('pause');
    expect(all.dutyCycle).toBe(0);
    expect(all.causes.map((c) => `${c.condition}:${c.level}`)).toEqual(['load:throttle', 'memory:pause', 'temperature:throttle']);
  });

  it('never yields NaN or an inconsistent duty cycle, whatever the readings', () => {
    const values = { otherLoad: [null, 0, 0.5, 0.79, 0.8, 0.85, 0.95, 1], freeMemoryBytes: [null, 0, 100 * MiB, 150 * MiB, 1e10], temperatureC: [null, 30, 72, 77, 84, 90], batteryPercent: [null, 0, 19, 22, 80], onBattery: [null, true, false] };
    let seed = 7;
    const pick = <T>(xs: T[]) => xs[(seed = (seed * 1103515245 + 12345) % 2 ** 31) % xs.length];
    let d = RUN;
    for (let i = 0; i < 5000; i++) {
      d = decide(d, { otherLoad: pick(values.otherLoad), freeMemoryBytes: pick(values.freeMemoryBytes), temperatureC: pick(values.temperatureC), batteryPercent: pick(values.batteryPercent), onBattery: pick(values.onBattery) });
      expect(Number.isFinite(d.dutyCycle)).toBe(true);
      if (d.mode === 'run') expect([d.dutyCycle, d.causes.length]).toEqual([1, 0]);
      if (d.mode === 'pause') expect(d.dutyCycle).toBe(0);
      if (d.mode === 'throttle') expect(d.dutyCycle > 0 && d.dutyCycle < 1).toBe(true);
    }
  });

  it('thresholds are checked', () => {
    expect(guardThresholds({ maxOtherLoad: 0.5 }).maxOtherLoad).toBe(0.5);
    expect(() => guardThresholds({ maxOtherLoad: 0.95 })).toThrow(/below pauseOtherLoad/);
    expect(() => guardThresholds({ pauseOtherLoad: 1.2 })).toThrow(RangeError);
    expect(() => guardThresholds({ minFreeMemoryBytes: NaN })).toThrow(/minFreeMemoryBytes/);
    const custom = guardThresholds({ maxOtherLoad: 0.5, pauseOtherLoad: 0.7 });
    expect(decide(RUN, r({ otherLoad: 0.6 }), custom).mode).toBe('throttle');
  });

  it('reads a hardware profile the way the guard needs it', () => {
    const hw = buildHardware({ mem: { total: 4e9, available: 1e9 }, battery: { hasBattery: true, percent: 40, acConnected: false }, temperature: { main: -1 }, load: { total: 0.9, own: 0.3, other: 0.6, seconds: 2 } });
    expect(readingFromHardware(hw)).toEqual({ otherLoad: 0.6, freeMemoryBytes: 1e9, temperatureC: null, batteryPercent: 40, onBattery: true });
    expect(readingFromHardware(buildHardware({ battery: { hasBattery: false } })).onBattery).toBe(false);
  });
});

describe('HostGuard (injected readings)', () => {
  it('emits state on changes only, applies the duty cycle to the trainer, reports busy', async () => {
    const readings: GuardReading[] = [calm, r({ otherLoad: 0.9 }), r({ otherLoad: 0.91 }), r({ otherLoad: 0.99 }), calm];
    const duties: number[] = [];
    const guard = new HostGuard({ read: async () => readings.shift()!, trainer: { setDutyCycle: (d) => duties.push(d) } });
    const states: string[] = [];
    let readingsSeen = 0;
    guard.on('state', (d) => states.push(`${d.mode}:${d.dutyCycle}`));
    guard.on('reading', () => readingsSeen++);
    expect(guard.busy).toBe(false);
    await guard.check();
    await guard.check();
    expect(guard.busy).toBe(true);
    await guard.check(); // 0.91: same duty band, no event
    await guard.check();
    await guard.check();
    expect(states).toEqual(['throttle:0.4', 'pause:0', 'run:1']);
    expect(duties).toEqual([0.4, 0, 1]);
    expect(readingsSeen).toBe(5);
    expect(guard.lastReading).toEqual(calm);
    const other: number[] = [];
    guard.attach({ setDutyCycle: (d) => other.push(d) });
    expect(other).toEqual([1]);
  });

  it('start() reads periodically until stop()', async () => {
    let reads = 0;
    const guard = new HostGuard({ intervalSeconds: 0.02, read: async () => (reads++, calm) });
    guard.start();
    await new Promise((res) => setTimeout(res, 150));
    guard.stop();
    const after = reads;
    expect(after).toBeGreaterThanOrEqual(3);
    await new Promise((res) => setTimeout(res, 60));
    expect(reads).toBe(after);
    expect(() => new HostGuard({ intervalSeconds: 0 })).toThrow(RangeError);
  });
});
