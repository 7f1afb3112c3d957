// Beijing Multi-Site Air Quality, Chen, S. (2017), UCI Machine Learning Repository, CC BY 4.0.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { AIR_CHANNELS, loadBeijingAir, partitionByOwner, type AirQualityDataset } from '../agent/data';

const repoRoot = path.resolve(__dirname, '..');
const dataDir = process.env.FEDGATE_DATA_DIR ?? path.resolve(repoRoot, '../shared/data');
const airDir = path.join(dataDir, 'beijing-air');
const haveAir = existsSync(airDir);
if (!haveAir) console.warn(`Beijing air-quality tests skipped: ${airDir} is absent (set FEDGATE_DATA_DIR to the folder holding beijing-air/)`);

const HOURS = 35064; // 2013-03-01 00:00 .. 2017-02-28 23:00 at every station

describe.skipIf(!haveAir)(`loadBeijingAir (${airDir})`, () => {
  let all: AirQualityDataset;
  beforeAll(async () => {
    all = await loadBeijingAir(airDir);
  }, 60_000);

  it('has 12 stations, the documented shapes and no NaN', () => {
    expect(all.ownerNames).toHaveLength(12);
    expect(all.ownerNames[0]).toBe('Aotizhongxin');
    expect(all.ownerNames).toContain('Dongsi');
    expect(all.features).toBe(6 * AIR_CHANNELS.length + 4);
    expect(all.featureNames).toHaveLength(all.features);
    expect(all.featureNames.slice(0, 2)).toEqual(['PM2.5@t-5', 'PM10@t-5']);
    expect(all.x.length).toBe(all.n * all.features);
    expect(all.y.length).toBe(all.n);
    // Every origin with a full window and a target is a candidate: hours 5..HOURS-2 at each station.
    expect(all.n + all.droppedRows).toBe(12 * (HOURS - 6));
    expect(all.n).toBe(338430); // 80% kept; the rest have an NA in the window or target
    let bad = 0;
    for (const v of all.x) if (!Number.isFinite(v)) bad++;
    for (const v of all.y) if (!Number.isFinite(v) || v < 0) bad++;
    expect(bad).toBe(0);
    const perStation = partitionByOwner(all.owners);
    expect(perStation).toHaveLength(12);
    for (const s of perStation) expect(s.indices.length).toBeGreaterThan(20000);
  });

  it('standardises features and keeps raw PM2.5 targets', () => {
    // First window at Aotizhongxin: readings 00:00..05:00 on 2013-03-01, PM2.5 was 5 at 05:00 and 3 at 06:00.
    expect(new Date(all.originHour[0] * 3_600_000).toISOString()).toBe('2013-03-01T05:00:00.000Z');
    const pmNow = all.featureNames.indexOf('PM2.5@t-0');
    expect(all.x[pmNow] * all.stats.std[pmNow] + all.stats.mean[pmNow]).toBeCloseTo(5, 3);
    expect(all.y[0]).toBe(3);
    expect(all.targetStats.mean).toBeGreaterThan(60);
    expect(all.targetStats.mean).toBeLessThan(100);
    for (const f of [0, pmNow, all.features - 1]) {
      let sum = 0;
      let squares = 0;
      for (let i = 0; i < all.n; i++) {
        sum += all.x[i * all.features + f];
        squares += all.x[i * all.features + f] ** 2;
      }
      expect(Math.abs(sum / all.n)).toBeLessThan(1e-3);
      expect(squares / all.n).toBeCloseTo(1, 3);
    }
  });

  it('splits by time with reusable statistics, per station, with other lags and horizons', async () => {
    const opts = { stations: ['Dongsi'], lagHours: 24, horizonHours: 6 };
    const train = await loadBeijingAir(airDir, { ...opts, to: '2016-03-01' });
    const test = await loadBeijingAir(airDir, { ...opts, from: '2016-03-01', stats: train.stats });
    expect(train.ownerNames).toEqual(['Dongsi']);
    expect(train.features).toBe(24 * 13 + 4);
    expect(test.stats).toBe(train.stats);
    const split = Date.UTC(2016, 2, 1) / 3_600_000;
    expect(Math.max(...train.originHour)).toBeLessThan(split);
    expect(Math.min(...test.originHour)).toBeGreaterThanOrEqual(split);
    expect(train.n).toBeGreaterThan(3 * test.n);
    await expect(loadBeijingAir(airDir, { stations: ['Atlantis'] })).rejects.toThrow(/unknown station\(s\) Atlantis; available: Aotizhongxin/);
    await expect(loadBeijingAir(airDir, { lagHours: 0 })).rejects.toThrow(/lagHours must be an integer >= 1/);
    await expect(loadBeijingAir(airDir, { stations: ['Dongsi'], stats: train.stats })).rejects.toThrow(/stats have 316 features, this lag needs 82/);
  }, 60_000);
});
