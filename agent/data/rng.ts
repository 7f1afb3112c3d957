/**
 * Seeded, deterministic pseudo-random numbers for partitioning and sampling.
 *
 * Generator: mulberry32 over a splitmix32-scrambled seed (32-bit state, period 2^32; plenty for
 * shuffling datasets of up to a few million rows, not for cryptography). The same seed gives the
 * same sequence on every platform, because everything is done in 32-bit integer arithmetic.
 */
export interface Rng {
  /** Uniform in [0, 1), 32 bits of resolution. */
  next(): number;
  /** Uniform integer in [0, n), for a positive integer n <= 2^32. */
  int(n: number): number;
  /** Standard normal N(0, 1) (Marsaglia polar method). */
  normal(): number;
  /** Gamma(shape, scale 1) for shape > 0 (Marsaglia–Tsang, with the U^(1/shape) boost for shape < 1). */
  gamma(shape: number): number;
}

function splitmix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Folds any finite number (negative, > 2^32, fractional) into a 32-bit seed deterministically. */
function seedToUint32(seed: number): number {
  if (!Number.isFinite(seed)) throw new TypeError(`createRng: seed must be a finite number, got ${seed}`);
  const whole = Math.trunc(seed);
  const low = whole >>> 0; // ToUint32 is defined modulo 2^32, also for negative numbers
  const high = Math.floor(whole / 0x100000000) >>> 0;
  const frac = Math.round((seed - whole) * 0x100000000) >>> 0;
  return splitmix32(low ^ splitmix32(high ^ splitmix32(frac)));
}

export function createRng(seed: number): Rng {
  let state = seedToUint32(seed);

  const nextUint32 = (): number => {
    state = (state + 0x6d2b79f5) | 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  const next = (): number => nextUint32() / 0x100000000;

  const int = (n: number): number => {
    if (!Number.isInteger(n) || n <= 0 || n > 0x100000000) throw new RangeError(`rng.int: n must be an integer in [1, 2^32], got ${n}`);
    // Rejection sampling keeps it exactly uniform (the bias of a plain multiply is tiny, but free to avoid).
    const limit = 0x100000000 - (0x100000000 % n);
    let r = nextUint32();
    while (r >= limit) r = nextUint32();
    return r % n;
  };

  const normal = (): number => {
    for (;;) {
      const u = 2 * next() - 1;
      const v = 2 * next() - 1;
      const s = u * u + v * v;
      if (s > 0 && s < 1) return u * Math.sqrt((-2 * Math.log(s)) / s);
    }
  };

  const gamma = (shape: number): number => {
    if (!(shape > 0) || !Number.isFinite(shape)) throw new RangeError(`rng.gamma: shape must be a finite number > 0, got ${shape}`);
    if (shape < 1) {
      // Gamma(a) = Gamma(a + 1) * U^(1/a) (Marsaglia & Tsang 2000, section 6). 1 - next() is in (0, 1].
      return gamma(shape + 1) * Math.pow(1 - next(), 1 / shape);
    }
    const d = shape - 1 / 3;
    const c = 1 / Math.sqrt(9 * d);
    for (;;) {
      let x: number;
      let v: number;
      do {
        x = normal();
        v = 1 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const u = 1 - next();
      if (u < 1 - 0.0331 * x * x * x * x) return d * v;
      if (Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
    }
  };

  return { next, int, normal, gamma };
}

/** In-place Fisher–Yates shuffle driven by `rng`. Returns its argument. */
export function shuffleInPlace<T extends { length: number; [i: number]: number }>(values: T, rng: Rng): T {
  for (let i = values.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const tmp = values[i];
    values[i] = values[j];
    values[j] = tmp;
  }
  return values;
}
