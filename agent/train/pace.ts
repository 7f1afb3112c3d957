/**
 * Duty cycle control shared between the Trainer (main thread) and its worker, through a
 * SharedArrayBuffer: the worker reads it between blocks without handling any message, and waits on
 * it with Atomics.wait, so raising the duty cycle (or closing) wakes a paused worker at once.
 *
 * Duty cycle d in [0, 1]: after a block that kept the CPU busy for t ms the worker rests
 * t·(1 − d)/d ms, so over time it computes a fraction d of the wall time. d = 0 pauses it until
 * d is raised again (or the task's deadline passes, or the trainer closes).
 */

const DUTY = 0; // duty cycle in millionths
const STOP = 1; // 1: the trainer is closing, end the current task now
const SLOTS = 2;
const SCALE = 1_000_000;

export function createControl(): Int32Array {
  const control = new Int32Array(new SharedArrayBuffer(SLOTS * Int32Array.BYTES_PER_ELEMENT));
  control[DUTY] = SCALE;
  return control;
}

/** Main-thread side: sets the duty cycle and wakes the worker if it is resting. */
export function writeDutyCycle(control: Int32Array, d: number): void {
  if (typeof d !== 'number' || !Number.isFinite(d) || d < 0 || d > 1) throw new RangeError(`setDutyCycle: expected a number from 0 to 1, got ${d}`);
  Atomics.store(control, DUTY, Math.round(d * SCALE));
  Atomics.notify(control, DUTY);
}

export function readDutyCycle(control: Int32Array): number {
  return Atomics.load(control, DUTY) / SCALE;
}

/** Main-thread side: asks a running task to stop at once (used by close). */
export function requestStop(control: Int32Array): void {
  Atomics.store(control, STOP, 1);
  Atomics.notify(control, DUTY);
}

/**
 * Worker side: decides how long to rest between blocks. Rest owed is carried over between blocks,
 * so a rest that overshoots (timer granularity, a busy scheduler) is taken off the next one and the
 * busy:idle split stays at d:(1 − d) over a task; the carried credit is capped at one block.
 */
export class Pacer {
  /** Duty cycle (millionths) the carried debt refers to; a change starts the account afresh. */
  private raw = -1;
  /** Rest still owed, ms (negative: rested more than owed). */
  private debt = 0;

  constructor(private readonly control: Int32Array) {}

  get stopRequested(): boolean {
    return Atomics.load(this.control, STOP) === 1;
  }

  /** Duty cycle 0: training is paused. */
  get paused(): boolean {
    return Atomics.load(this.control, DUTY) === 0;
  }

  /** Called at the start of every task. */
  reset(): void {
    this.raw = -1;
    this.debt = 0;
  }

  /**
   * Rests as the duty cycle asks after a block that took `busyMs` (0 before the first block: then
   * it only waits out a pause). Returns early at `deadlineAt` (a performance.now() time) or on a
   * stop request; the caller checks both. Returns the milliseconds spent resting.
   */
  rest(busyMs: number, deadlineAt: number): number {
    const start = performance.now();
    const owedFor = (raw: number) => (raw > 0 && raw < SCALE ? (busyMs * (SCALE - raw)) / raw : 0);
    let raw = Atomics.load(this.control, DUTY);
    if (raw !== this.raw) {
      this.raw = raw;
      this.debt = 0;
    }
    this.debt += owedFor(raw);
    for (;;) {
      if (this.stopRequested) break;
      raw = Atomics.load(this.control, DUTY);
      if (raw >= SCALE) break;
      if (raw !== this.raw) {
        // Changed while resting: this block's rest at the new rate, the time already rested counting.
        this.raw = raw;
        this.debt = owedFor(raw);
      }
      const now = performance.now();
      const remaining = raw > 0 ? this.debt - (now - start) : Infinity;
      if (remaining <= 0) break;
      const untilDeadline = deadlineAt - now;
      if (untilDeadline <= 0) break;
      Atomics.wait(this.control, DUTY, raw, Math.min(remaining, untilDeadline));
    }
    const rested = performance.now() - start;
    this.debt = raw > 0 && raw < SCALE ? Math.max(this.debt - rested, -busyMs) : 0;
    return rested;
  }
}
