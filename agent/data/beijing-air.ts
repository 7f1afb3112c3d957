/**
 * Beijing Multi-Site Air Quality as a federated regression task: one monitoring station = one
 * gateway, forecasting PM2.5 from the station's own recent readings.
 *
 * Data: "Beijing Multi-Site Air Quality, Chen, S. (2017), UCI Machine Learning Repository,
 * CC BY 4.0" (https://doi.org/10.24432/C5RK5G): hourly readings from 2013-03-01 to 2017-02-28 at
 * 12 stations, one CSV per station (`PRSA_Data_<Station>_20130301-20170228.csv`, gzipped or not),
 * with missing values written as NA.
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { readCsvRecords } from './csv';

/** Numeric columns used as inputs, per hour (all of them; PM2.5 is also the target). */
export const AIR_NUMERIC_COLUMNS = ['PM2.5', 'PM10', 'SO2', 'NO2', 'CO', 'O3', 'TEMP', 'PRES', 'DEWP', 'RAIN', 'WSPM'] as const;
/** Per-hour channels: the numeric columns, then wind direction as a unit vector (direction the wind blows from). */
export const AIR_CHANNELS = [...AIR_NUMERIC_COLUMNS, 'wd_sin', 'wd_cos'] as const;
/** Calendar features of the forecast target hour, appended after the lagged channels. */
export const AIR_CALENDAR_FEATURES = ['hour_sin', 'hour_cos', 'yearday_sin', 'yearday_cos'] as const;

const COMPASS = ['N', 'NNE', 'NE', 'ENE', 'E', 'ESE', 'SE', 'SSE', 'S', 'SSW', 'SW', 'WSW', 'W', 'WNW', 'NW', 'NNW'];
const STATION_FILE = /^PRSA_Data_(.+)_\d{8}-\d{8}\.csv(\.gz)?$/;
const HOUR_MS = 3_600_000;
const PM25 = 0; // channel index of PM2.5
const BEIJING_UTC_OFFSET_HOURS = 8;

export interface FeatureStats {
  /** Per-feature mean and standard deviation used to standardise x (std 0 is replaced by 1). */
  mean: Float32Array;
  std: Float32Array;
}

export interface AirQualityOptions {
  /** Forecast the PM2.5 reading this many hours after the last input hour (default 1). */
  horizonHours?: number;
  /** Input window: this many consecutive hours of readings, ending at the forecast origin (default 6). */
  lagHours?: number;
  /** Load only these stations (names as in the files, e.g. 'Dongsi'); default all, sorted by name. */
  stations?: string[];
  /** Keep only windows whose forecast origin lies in [from, to): ISO dates or date-times, on the station clock unless a zone is given. */
  from?: string;
  to?: string;
  /** Standardise with these statistics (e.g. the training period's) instead of computing them. */
  stats?: FeatureStats;
}

export interface AirQualityDataset {
  /** Windows (samples). */
  n: number;
  /** lagHours × 13 channels + 4 calendar features. */
  features: number;
  /** Row-major n × features, standardised: (raw - stats.mean) / stats.std. */
  x: Float32Array;
  /** PM2.5 at origin + horizonHours, in µg/m³ (not standardised; see targetStats). */
  y: Float32Array;
  /** Station index of each row, into ownerNames. */
  owners: Uint32Array;
  /** Station names, sorted. */
  ownerNames: string[];
  /** 'PM2.5@t-5', …, 'wd_cos@t-0', then the calendar features; t = forecast origin. */
  featureNames: string[];
  /** Statistics x was standardised with; pass them as `stats` to standardise another period the same way. */
  stats: FeatureStats;
  /** Mean and standard deviation of y, for trainers that standardise the target. */
  targetStats: { mean: number; std: number };
  /** Forecast origin of each row, in hours since 1970-01-01 00:00 of the station clock (Beijing time). */
  originHour: Uint32Array;
  /** Candidate windows skipped because a value in the window or the target was missing. */
  droppedRows: number;
  horizonHours: number;
  lagHours: number;
  name: string;
}

interface StationSeries {
  station: string;
  /** Hour index of grid row 0. */
  firstHour: number;
  hours: number;
  /** hours × AIR_CHANNELS.length, NaN where missing. */
  grid: Float32Array;
}

function checkPositiveInteger(name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min) throw new RangeError(`loadBeijingAir: ${name} must be an integer >= ${min}, got ${value}`);
}

function parseDateHour(text: string, option: string): number {
  // A date or a date-time without a zone is read on the station clock (the files' local time, Beijing
  // = UTC+8 all year); one with a zone (Z, +08:00) is converted to it.
  const zoned = /([zZ]|[+-]\d{2}:?\d{2})$/.test(text) && text.includes('T');
  const ms = Date.parse(/^\d{4}-\d{2}-\d{2}$/.test(text) ? `${text}T00:00:00Z` : zoned ? text : `${text}Z`);
  if (!Number.isFinite(ms)) throw new Error(`loadBeijingAir: ${option} must be an ISO date like 2016-03-01, got ${JSON.stringify(text)}`);
  return Math.floor(ms / HOUR_MS) + (zoned ? BEIJING_UTC_OFFSET_HOURS : 0);
}

/** Finds the station files in `dir`, sorted by station name. */
export function beijingAirStations(dir: string): { station: string; file: string }[] {
  const found = readdirSync(dir)
    .map((file) => ({ file: path.join(dir, file), match: STATION_FILE.exec(file) }))
    .filter((f) => f.match)
    .map((f) => ({ station: f.match![1], file: f.file }))
    .sort((a, b) => (a.station < b.station ? -1 : a.station > b.station ? 1 : 0));
  if (found.length === 0) throw new Error(`loadBeijingAir: no PRSA_Data_<Station>_<from>-<to>.csv[.gz] files in ${dir}`);
  return found;
}

/** Growable float64 buffer (rows of a station file, before they are placed on the hourly grid). */
class NumberBuffer {
  data = new Float64Array(1 << 16);
  length = 0;
  push(value: number): void {
    if (this.length === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.length++] = value;
  }
}

function parseReading(text: string, file: string, line: number, column: string): number {
  if (text === 'NA' || text === '') return NaN;
  const value = Number(text);
  if (!Number.isFinite(value)) throw new Error(`${file}: line ${line}, column ${column}: ${JSON.stringify(text)} is not a number or NA`);
  return value;
}

/** Reads one station's CSV into an hourly grid of channels (NaN = missing; gaps in time are NaN rows). */
async function readStation(file: string, station: string): Promise<StationSeries> {
  const channels = AIR_CHANNELS.length;
  const rowHours = new NumberBuffer();
  const rowValues = new NumberBuffer();
  let dateColumns: number[] | undefined;
  let numericColumns: number[] = [];
  let windColumn = -1;
  await readCsvRecords(file, ({ fields, line }) => {
    if (!dateColumns) {
      const header = fields.map((name) => name.trim());
      const missing = ['year', 'month', 'day', 'hour', 'wd', ...AIR_NUMERIC_COLUMNS].filter((c) => !header.includes(c));
      if (missing.length > 0) throw new Error(`${file}: missing columns ${missing.join(', ')}`);
      dateColumns = ['year', 'month', 'day', 'hour'].map((c) => header.indexOf(c));
      numericColumns = AIR_NUMERIC_COLUMNS.map((c) => header.indexOf(c));
      windColumn = header.indexOf('wd');
      return;
    }
    const [year, month, day, hourOfDay] = dateColumns.map((c) => Number(fields[c]));
    const hour = Date.UTC(year, month - 1, day, hourOfDay) / HOUR_MS;
    if (!Number.isInteger(hour)) throw new Error(`${file}: line ${line}: bad date ${dateColumns.map((c) => fields[c]).join(' ')}`);
    rowHours.push(hour);
    for (let k = 0; k < numericColumns.length; k++) rowValues.push(parseReading(fields[numericColumns[k]], file, line, AIR_NUMERIC_COLUMNS[k]));
    const wd = fields[windColumn];
    if (wd === 'NA' || wd === '') {
      rowValues.push(NaN);
      rowValues.push(NaN);
    } else {
      const point = COMPASS.indexOf(wd);
      if (point < 0) throw new Error(`${file}: line ${line}: unknown wind direction ${JSON.stringify(wd)}`);
      const angle = (point * Math.PI) / 8;
      rowValues.push(Math.sin(angle));
      rowValues.push(Math.cos(angle));
    }
  });
  const rows = rowHours.length;
  if (rows === 0) throw new Error(`${file}: no readings`);
  let firstHour = Infinity;
  let lastHour = -Infinity;
  for (let r = 0; r < rows; r++) {
    firstHour = Math.min(firstHour, rowHours.data[r]);
    lastHour = Math.max(lastHour, rowHours.data[r]);
  }
  const hours = lastHour - firstHour + 1;
  const grid = new Float32Array(hours * channels).fill(NaN);
  const seen = new Uint8Array(hours);
  for (let r = 0; r < rows; r++) {
    const t = rowHours.data[r] - firstHour;
    if (seen[t]) throw new Error(`${file}: two rows for ${new Date(rowHours.data[r] * HOUR_MS).toISOString().slice(0, 13)}h`);
    seen[t] = 1;
    grid.set(rowValues.data.subarray(r * channels, (r + 1) * channels), t * channels);
  }
  return { station, firstHour, hours, grid };
}

/** Forecast origins t (grid rows) whose window t-lag+1..t is complete and whose target t+horizon is present. */
function completeWindows(series: StationSeries, lag: number, horizon: number, fromHour: number, toHour: number): { origins: number[]; candidates: number } {
  const channels = AIR_CHANNELS.length;
  const complete = new Uint8Array(series.hours);
  for (let t = 0; t < series.hours; t++) {
    let ok = 1;
    for (let c = 0; c < channels; c++) if (Number.isNaN(series.grid[t * channels + c])) ok = 0;
    complete[t] = ok;
  }
  const origins: number[] = [];
  let candidates = 0;
  let incompleteInWindow = 0;
  for (let t = 0; t < series.hours; t++) {
    incompleteInWindow += 1 - complete[t];
    if (t >= lag) incompleteInWindow -= 1 - complete[t - lag];
    if (t < lag - 1 || t + horizon >= series.hours) continue;
    const hour = series.firstHour + t;
    if (hour < fromHour || hour >= toHour) continue;
    candidates++;
    if (incompleteInWindow === 0 && !Number.isNaN(series.grid[(t + horizon) * channels + PM25])) origins.push(t);
  }
  return { origins, candidates };
}

/**
 * Loads the Beijing air-quality stations as a regression dataset of sliding windows: the inputs
 * are `lagHours` consecutive hours of all 13 channels at one station (time-major: the oldest hour's
 * channels first) plus calendar features of the target hour; the target is that station's PM2.5
 * `horizonHours` after the window's last hour.
 *
 * Missing values: a window is dropped if any of its readings (any channel, any hour) or its target
 * is missing (NA) or the hour is absent from the file; nothing is imputed. With the defaults
 * (lag 6, horizon 1) this keeps about 80% of the windows (338,430 of 420,696; see droppedRows).
 *
 * x is standardised per feature with `opts.stats` if given, otherwise with the mean and standard
 * deviation of the loaded rows (returned as `stats`). For an honest evaluation, load the training
 * period first and pass its `stats` when loading the test period (`from`/`to`).
 *
 * Memory: n × features × 4 bytes; all 12 stations at the defaults are 338k rows × 82 features,
 * about 111 MB. A gateway that owns one station should pass `stations: [name]` (~11 MB).
 */
export async function loadBeijingAir(dir: string, opts: AirQualityOptions = {}): Promise<AirQualityDataset> {
  const horizon = opts.horizonHours ?? 1;
  const lag = opts.lagHours ?? 6;
  checkPositiveInteger('horizonHours', horizon, 1);
  checkPositiveInteger('lagHours', lag, 1);
  const fromHour = opts.from === undefined ? -Infinity : parseDateHour(opts.from, 'from');
  const toHour = opts.to === undefined ? Infinity : parseDateHour(opts.to, 'to');

  let stations = beijingAirStations(dir);
  if (opts.stations) {
    const available = stations.map((s) => s.station);
    const unknown = opts.stations.filter((s) => !available.includes(s));
    if (unknown.length > 0) throw new Error(`loadBeijingAir: unknown station(s) ${unknown.join(', ')}; available: ${available.join(', ')}`);
    stations = stations.filter((s) => opts.stations!.includes(s.station));
  }
  const series = await Promise.all(stations.map((s) => readStation(s.file, s.station)));

  const channels = AIR_CHANNELS.length;
  const features = lag * channels + AIR_CALENDAR_FEATURES.length;
  const featureNames: string[] = [];
  for (let k = lag - 1; k >= 0; k--) for (const channel of AIR_CHANNELS) featureNames.push(`${channel}@t-${k}`);
  featureNames.push(...AIR_CALENDAR_FEATURES);
  if (opts.stats && (opts.stats.mean.length !== features || opts.stats.std.length !== features)) {
    throw new Error(`loadBeijingAir: stats have ${opts.stats.mean.length} features, this lag needs ${features}`);
  }

  const windows = series.map((s) => completeWindows(s, lag, horizon, fromHour, toHour));
  const n = windows.reduce((sum, w) => sum + w.origins.length, 0);
  const droppedRows = windows.reduce((sum, w) => sum + w.candidates - w.origins.length, 0);
  const x = new Float32Array(n * features);
  const y = new Float32Array(n);
  const owners = new Uint32Array(n);
  const originHour = new Uint32Array(n);
  let row = 0;
  let calendarDay = NaN;
  let dayAngle = 0;
  series.forEach((s, station) => {
    for (const t of windows[station].origins) {
      const offset = row * features;
      const windowStart = (t - lag + 1) * channels;
      for (let k = 0; k < lag * channels; k++) x[offset + k] = s.grid[windowStart + k];
      const targetHour = s.firstHour + t + horizon;
      const day = Math.floor(targetHour / 24);
      if (day !== calendarDay) {
        const date = new Date(day * 24 * HOUR_MS);
        dayAngle = (2 * Math.PI * (day - Date.UTC(date.getUTCFullYear(), 0, 1) / (24 * HOUR_MS))) / 365.25;
        calendarDay = day;
      }
      const hourAngle = (2 * Math.PI * (targetHour - day * 24)) / 24;
      const calendar = offset + lag * channels;
      x[calendar] = Math.sin(hourAngle);
      x[calendar + 1] = Math.cos(hourAngle);
      x[calendar + 2] = Math.sin(dayAngle);
      x[calendar + 3] = Math.cos(dayAngle);
      y[row] = s.grid[(t + horizon) * channels + PM25];
      owners[row] = station;
      originHour[row] = s.firstHour + t;
      row++;
    }
  });

  const stats = opts.stats ?? featureStats(x, n, features);
  for (let i = 0; i < n; i++) {
    for (let f = 0; f < features; f++) x[i * features + f] = (x[i * features + f] - stats.mean[f]) / stats.std[f];
  }
  const target = featureStats(y, n, 1);
  return {
    n,
    features,
    x,
    y,
    owners,
    ownerNames: series.map((s) => s.station),
    featureNames,
    stats,
    targetStats: { mean: target.mean[0], std: target.std[0] },
    originHour,
    droppedRows,
    horizonHours: horizon,
    lagHours: lag,
    name: `beijing-air(lag ${lag}h, horizon ${horizon}h)`,
  };
}

/** Per-column mean and (population) standard deviation in float64; a constant column gets std 1. */
function featureStats(x: Float32Array, n: number, features: number): FeatureStats {
  const sum = new Float64Array(features);
  for (let i = 0; i < n; i++) for (let f = 0; f < features; f++) sum[f] += x[i * features + f];
  const mean = sum.map((s) => (n > 0 ? s / n : 0));
  const squares = new Float64Array(features);
  for (let i = 0; i < n; i++) {
    for (let f = 0; f < features; f++) {
      const d = x[i * features + f] - mean[f];
      squares[f] += d * d;
    }
  }
  const std = squares.map((s) => (n > 0 && s > 0 ? Math.sqrt(s / n) : 1));
  return { mean: Float32Array.from(mean), std: Float32Array.from(std) };
}
