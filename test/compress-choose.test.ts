import { describe, expect, it } from 'vitest';
import {
  CODEC_LADDER, chooseCodec, encode, framedBytes, payloadBytes, type CodecOptions,
} from '../agent/compress';
import { encodeFrames, FrameKind } from '../agent/transport/frame';

// The 784-128-10 MLP of the README job.
const N = 101_770;
const MBIT = 1e6 / 8; // 125,000 bytes/s

// Wire sizes for N values, block size 256 (398 blocks), default 128 KiB frames with 32 + 256
// bytes per frame: room for 130,784 data bytes a frame. Exact for dense codecs; for top-k the
// largest the index stream can be: k bytes, plus one for each gap that can reach 128 within the
// n - k the gaps sum to (then 16,256 more for a third byte, ...).
const WIRE = {
  none: 20 + 4 * N + 4 * 288, // 407,100 payload in 4 frames
  int8: 20 + 4 * 398 + N + 288, // 103,670
  int4: 20 + 4 * 398 + N / 2 + 288, // 52,785
  topkInt8_10: 20 + 4 * 40 + 10_177 + (10_177 + 715) + 288, // k = 10,177; 715 = floor(91,593 / 128): 21,537
  topkInt8_1: 20 + 4 * 4 + 1018 + (1018 + 787) + 288, // k = round(1017.7) = 1018; 787 = floor(100,752 / 128): 3,147
  topkInt8_01: 20 + 4 + 102 + (102 + 102 + 5) + 288, // k = 102: all 102 gaps can reach 128, 5 of them 16,384: 623
  topk_1: 20 + 4 * 1018 + (1018 + 787) + 288, // 6,185
};

describe('chooseCodec', () => {
  it('has the exact sizes of the format plus frames', () => {
    expect(WIRE).toEqual({ none: 408_252, int8: 103_670, int4: 52_785, topkInt8_10: 21_537, topkInt8_1: 3_147, topkInt8_01: 623, topk_1: 6_185 });
  });

  it('1 Mbit/s cellular, 2 s budget, 101,770 params: int8 (none would take 3.3 s)', () => {
    const d = chooseCodec({ paramCount: N, upBytesPerSecond: MBIT, uploadBudgetSeconds: 2 });
    expect(d.codec).toEqual({ codec: 'int8', blockSize: 256 });
    expect(d.expectedBytes).toBe(103_670);
    expect(d.expectedSeconds).toBeCloseTo(0.82936, 10);
    expect(d.reason).toMatch(/int8 is the least lossy that fits/);
  });

  it('goes down the ladder as the link or the budget shrinks', () => {
    const pick = (speed: number, budget: number) => {
      const d = chooseCodec({ paramCount: N, upBytesPerSecond: speed, uploadBudgetSeconds: budget });
      return [d.codec.codec, d.codec.k, d.expectedBytes];
    };
    expect(pick(10 * MBIT, 2)).toEqual(['none', undefined, WIRE.none]); // 0.33 s
    expect(pick(MBIT, 3.3)).toEqual(['none', undefined, WIRE.none]); // 3.266 s fits exactly-ish
    expect(pick(MBIT, 0.83)).toEqual(['int8', undefined, WIRE.int8]); // 0.829 s
    expect(pick(MBIT, 0.8)).toEqual(['topk-int8', 0.1, WIRE.topkInt8_10]); // int8 0.829 s > 0.8; topk 10% 0.172 s
    expect(pick(MBIT, 0.173)).toEqual(['topk-int8', 0.1, WIRE.topkInt8_10]);
    expect(pick(MBIT, 0.17)).toEqual(['topk-int8', 0.01, WIRE.topkInt8_1]);
    expect(pick(50e3 / 8, 2)).toEqual(['topk-int8', 0.01, WIRE.topkInt8_1]); // LoRa backhaul 50 kbit/s: 0.50 s (10%: 3.4 s)
    expect(pick(1000, 2)).toEqual(['topk-int8', 0.001, WIRE.topkInt8_01]); // 8 kbit/s: 0.623 s (1%: 3.1 s)
  });

  it('an expected time equal to the budget fits', () => {
    const d = chooseCodec({ paramCount: N, upBytesPerSecond: WIRE.int8, uploadBudgetSeconds: 1 });
    expect(d.codec.codec).toBe('int8');
    expect(d.expectedSeconds).toBe(1);
  });

  it('when nothing fits, takes the strongest and says so', () => {
    const d = chooseCodec({ paramCount: N, upBytesPerSecond: 100, uploadBudgetSeconds: 2 });
    expect(d.codec).toEqual({ codec: 'topk-int8', k: 0.001, blockSize: 256 });
    expect(d.expectedBytes).toBe(623);
    expect(d.expectedSeconds).toBeCloseTo(6.23, 10);
    expect(d.reason).toMatch(/^nothing fits/);
  });

  it('an infinitely fast link takes none in zero seconds', () => {
    const d = chooseCodec({ paramCount: N, upBytesPerSecond: Infinity, uploadBudgetSeconds: 1 });
    expect(d.codec).toEqual({ codec: 'none' });
    expect(d.expectedSeconds).toBe(0);
  });

  it('unknown link speed: int8, with no expected time', () => {
    for (const speed of [null, NaN, -1, 0, -Infinity, undefined as unknown as null, '1e6' as unknown as number]) {
      const d = chooseCodec({ paramCount: N, upBytesPerSecond: speed, uploadBudgetSeconds: 2 });
      expect(d.codec).toEqual({ codec: 'int8', blockSize: 256 });
      expect(d.expectedBytes).toBe(WIRE.int8);
      expect(d.expectedSeconds).toBeNull();
      expect(d.reason).toMatch(speed === null || speed === undefined ? /^link speed unknown: safe default int8/ : /is not a usable measurement: safe default int8/);
    }
  });

  it('a pinned codec always wins, whatever the link', () => {
    const none = chooseCodec({ paramCount: N, upBytesPerSecond: 100, uploadBudgetSeconds: 1, pinned: { codec: 'none' } });
    expect(none.codec).toEqual({ codec: 'none' });
    expect(none.expectedBytes).toBe(WIRE.none);
    expect(none.expectedSeconds).toBeCloseTo(4082.52, 8);
    expect(none.reason).toMatch(/^pinned none/);

    const pinned: CodecOptions = { codec: 'topk', k: 0.05 };
    const topk = chooseCodec({ paramCount: N, upBytesPerSecond: null, uploadBudgetSeconds: 2, pinned, allowed: ['int8'] });
    expect(topk.codec).toEqual(pinned);
    expect(topk.codec).not.toBe(pinned); // a copy
    expect(topk.expectedBytes).toBe(20 + 4 * 5089 + (5089 + 755) + 288); // k = round(5088.5) = 5089; 755 = floor(96,681 / 128)
    expect(topk.expectedSeconds).toBeNull();
    expect(topk.reason).toMatch(/^pinned topk k=0.05 .*link speed unknown/);

    const int4 = chooseCodec({ paramCount: N, upBytesPerSecond: 10 * MBIT, uploadBudgetSeconds: 2, pinned: { codec: 'int4', stochastic: true, blockSize: 64 } });
    expect(int4.expectedBytes).toBe(20 + 4 * Math.ceil(N / 64) + N / 2 + 288);
    expect(int4.reason).toMatch(/^pinned int4 stochastic/);
  });

  it('keeps to the allowed codecs', () => {
    // Without topk-int8 the sparse rungs fall back to float-valued topk at the same k.
    const d = chooseCodec({ paramCount: N, upBytesPerSecond: 12_500, uploadBudgetSeconds: 2, allowed: ['none', 'topk'] });
    expect(d.codec).toEqual({ codec: 'topk', k: 0.01 });
    expect(d.expectedBytes).toBe(WIRE.topk_1);
    // Without top-k, stochastic int4 stands in for top-k 10% + int8.
    const int4 = chooseCodec({ paramCount: N, upBytesPerSecond: MBIT, uploadBudgetSeconds: 0.8, allowed: ['none', 'int8', 'int4'] });
    expect(int4.codec).toEqual({ codec: 'int4', blockSize: 256, stochastic: true });
    expect(int4.expectedBytes).toBe(WIRE.int4);
    expect(chooseCodec({ paramCount: N, upBytesPerSecond: 100, uploadBudgetSeconds: 2, allowed: ['none', 'int8', 'int4'] }).codec.codec).toBe('int4');
    // Unknown link without int8: the weakest allowed codec at least as strong as int8.
    expect(chooseCodec({ paramCount: N, upBytesPerSecond: null, uploadBudgetSeconds: 2, allowed: ['int4', 'topk'] }).codec.codec).toBe('int4');
    // Only none allowed: none, even on a slow link (nothing stronger to fall back to).
    expect(chooseCodec({ paramCount: N, upBytesPerSecond: null, uploadBudgetSeconds: 2, allowed: ['none'] }).codec).toEqual({ codec: 'none' });
    expect(chooseCodec({ paramCount: N, upBytesPerSecond: 100, uploadBudgetSeconds: 2, allowed: ['none', 'int8'] }).codec.codec).toBe('int8');
  });

  it('counts every frame of a payload that needs several', () => {
    const d = chooseCodec({ paramCount: N, upBytesPerSecond: null, uploadBudgetSeconds: 2, maxFrameBytes: 1000, frameOverheadBytes: 100 });
    // room 1000 - 132 = 868 bytes a frame: 103,382 / 868 -> 120 frames
    expect(d.expectedBytes).toBe(103_382 + 120 * 132);
  });

  it('rejects bad inputs before choosing', () => {
    const ok = { paramCount: N, upBytesPerSecond: MBIT, uploadBudgetSeconds: 2 };
    for (const paramCount of [0, -1, 1.5, NaN, Infinity, 2 ** 32]) expect(() => chooseCodec({ ...ok, paramCount })).toThrow(RangeError);
    expect(() => chooseCodec({ ...ok, paramCount: 0 })).toThrow(/paramCount/);
    for (const uploadBudgetSeconds of [0, -1, NaN]) expect(() => chooseCodec({ ...ok, uploadBudgetSeconds })).toThrow(/uploadBudgetSeconds/);
    expect(() => chooseCodec({ ...ok, allowed: [] })).toThrow(/allowed/);
    expect(() => chooseCodec({ ...ok, allowed: ['zip' as never] })).toThrow(/'zip'/);
    expect(() => chooseCodec({ ...ok, pinned: { codec: 'zip' as never } })).toThrow(RangeError);
    expect(() => chooseCodec({ ...ok, pinned: { codec: 'topk', k: 2 } })).toThrow(/k must be/);
    expect(() => chooseCodec({ ...ok, pinned: 'int8' as never })).toThrow(TypeError);
    expect(() => chooseCodec({ ...ok, maxFrameBytes: 200 })).toThrow(/no room/);
    expect(() => chooseCodec({ ...ok, maxFrameBytes: 0 })).toThrow(/maxFrameBytes/);
    expect(() => chooseCodec(null as never)).toThrow(TypeError);
  });

  it('is pure: same input, same answer, ladder untouched', () => {
    const input = { paramCount: N, upBytesPerSecond: MBIT, uploadBudgetSeconds: 2 };
    const a = chooseCodec(input);
    a.codec.blockSize = 1;
    expect(chooseCodec(input)).toEqual({ ...a, codec: { codec: 'int8', blockSize: 256 } });
    expect(CODEC_LADDER[1][0]).toEqual({ codec: 'int8', blockSize: 256 });
  });
});

describe('chooser sizes match the real encoder and frames', () => {
  it('payloadBytes equals the length encode() produces for dense codecs, and bounds it for top-k, for every rung and odd lengths', () => {
    for (const n of [1, 3, 7, 255, 256, 257, 4097, 10_001]) {
      const x = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 1.7) * (1 + (i % 13)));
      for (const rung of CODEC_LADDER) {
        for (const c of rung) {
          const len = encode(x, c).length;
          if (c.codec === 'topk' || c.codec === 'topk-int8') expect(len, `${c.codec} k=${c.k} n=${n}`).toBeLessThanOrEqual(payloadBytes(n, c));
          else expect(payloadBytes(n, c), `${c.codec} n=${n}`).toBe(len);
        }
      }
    }
  });

  it('the top-k bound is reached by the worst spacing and never exceeded', () => {
    // n 300, k 2: the gaps sum to at most 298, so both can be 128 (2 bytes each): values at 128 and 257.
    const worst = new Float32Array(300);
    worst[128] = 1;
    worst[257] = -1;
    const k = 2 / 300;
    expect(payloadBytes(300, { codec: 'topk', k })).toBe(20 + 8 + 4);
    expect(encode(worst, { codec: 'topk', k }).length).toBe(20 + 8 + 4);
    // Random positions and sizes: the stream stays within the bound.
    let seed = 7;
    const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    for (let t = 0; t < 200; t++) {
      const n = 1 + Math.floor(rand() * 40_000);
      const x = Float32Array.from({ length: n }, () => (rand() < 0.5 ? rand() * 1e-3 : rand() ** 8));
      const c: CodecOptions = { codec: rand() < 0.5 ? 'topk' : 'topk-int8', k: Math.max(1e-4, rand() ** 3) };
      expect(encode(x, c).length, `${c.codec} k=${c.k} n=${n}`).toBeLessThanOrEqual(payloadBytes(n, c));
    }
  });

  it('framedBytes equals the sum of encodeFrames() lengths when the metadata is the overhead', () => {
    const meta = { pad: '' };
    for (const [payload, maxFrame] of [[1, 1000], [5126, 1000], [103_382, 4096], [407_100, 131_072], [0, 500]] as const) {
      const metaBytes = 100;
      meta.pad = 'x'.repeat(metaBytes - JSON.stringify({ pad: '' }).length);
      const frames = encodeFrames(FrameKind.Update, meta, new Uint8Array(payload), maxFrame, 1);
      expect(framedBytes(payload, maxFrame, metaBytes)).toBe(frames.reduce((s, f) => s + f.length, 0));
    }
  });
});
