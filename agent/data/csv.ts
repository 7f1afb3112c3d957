import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import type { Dataset } from './dataset';

/**
 * CSV reading (RFC 4180: quoted fields, "" as an escaped quote, quoted line breaks) streamed line by
 * line through node:readline, gunzipping on the fly when the file starts with the gzip magic
 * (whatever its name). Used by loadCsvDataset and the Beijing air-quality loader.
 */

export interface CsvRecord {
  fields: string[];
  /** 1-based line number where the record starts (the header is line 1). */
  line: number;
}

/**
 * Splits one CSV record into fields; returns undefined while a quoted field is still open (the
 * record continues on the next line). A field is quoted only if it starts with a quote; a quote
 * inside an unquoted field is kept literally.
 */
export function splitCsvRecord(text: string, delimiter = ','): string[] | undefined {
  if (text.indexOf('"') < 0) return text.split(delimiter);
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    let value = '';
    if (text[i] === '"') {
      let j = i + 1;
      for (;;) {
        const quote = text.indexOf('"', j);
        if (quote < 0) return undefined;
        value += text.slice(j, quote);
        if (text[quote + 1] === '"') {
          value += '"';
          j = quote + 2;
        } else {
          i = quote + 1;
          break;
        }
      }
    }
    const end = text.indexOf(delimiter, i);
    fields.push(value + text.slice(i, end < 0 ? text.length : end));
    if (end < 0) return fields;
    i = end + delimiter.length;
  }
}

async function startsWithGzipMagic(file: string): Promise<boolean> {
  const handle = await open(file, 'r');
  try {
    const head = Buffer.alloc(2);
    const { bytesRead } = await handle.read(head, 0, 2, 0);
    return bytesRead === 2 && head[0] === 0x1f && head[1] === 0x8b;
  } finally {
    await handle.close();
  }
}

/**
 * Streams the records of a CSV file (plain or gzipped), header included, skipping blank lines,
 * calling `onRecord` for each; resolves with the number of records. An exception thrown by
 * `onRecord` stops reading and rejects with it. Uses readline's 'line' events rather than its
 * async iterator: a promise per line made reading the 12 Beijing files about twice as slow.
 */
export async function readCsvRecords(file: string, onRecord: (record: CsvRecord) => void, opts: { delimiter?: string } = {}): Promise<number> {
  const delimiter = opts.delimiter ?? ',';
  const gzipped = await startsWithGzipMagic(file);
  return new Promise<number>((resolve, reject) => {
    const raw = createReadStream(file);
    let input: Readable = raw;
    if (gzipped) input = raw.pipe(createGunzip());
    const lines = createInterface({ input, crlfDelay: Infinity });
    let settled = false;
    let lineNumber = 0;
    let records = 0;
    let pending = '';
    let pendingStart = 0;
    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      lines.close();
      raw.destroy();
      input.destroy();
      reject(err.message.startsWith(file) ? err : new Error(`${file}: ${err.message}`));
    };
    raw.on('error', fail);
    input.on('error', fail);
    lines.on('error', fail); // readline re-emits input errors (a truncated gzip) on the interface
    lines.on('line', (line) => {
      if (settled) return;
      lineNumber++;
      if (pending === '' && line.trim() === '') return;
      if (pending === '') pendingStart = lineNumber;
      const text = pending === '' ? line : `${pending}\n${line}`;
      const fields = splitCsvRecord(lineNumber === 1 ? text.replace(/^\uFEFF/, '') : text, delimiter);
      if (fields === undefined) {
        pending = text;
        return;
      }
      pending = '';
      records++;
      try {
        onRecord({ fields, line: pendingStart });
      } catch (err) {
        fail(err as Error);
      }
    });
    lines.on('close', () => {
      if (settled) return;
      if (pending !== '') return fail(new Error(`unterminated quoted field starting on line ${pendingStart}`));
      settled = true;
      resolve(records);
    });
  });
}

/** Values read as "missing" by default (after trimming whitespace). */
export const DEFAULT_MISSING_VALUES: readonly string[] = ['', 'NA', 'N/A', 'NaN', 'nan', 'null', 'NULL', 'None', '?'];

const FLOAT32_MAX = 3.4028234663852886e38;

export interface CsvDatasetOptions {
  /** Column holding the class of each row. */
  label: string;
  /** Column naming the device or user that owns each row (becomes `owners`/`ownerNames`). */
  owner?: string;
  /** A file without the owner column is fine (the column is only kept out of the features where present). */
  ownerOptional?: boolean;
  /**
   * The fleet's class list: class c is `classes[c]`, and every label must be one of these names
   * (compared after trimming; numeric-looking labels too are names then). Without it, see the label
   * rule of loadCsvDataset.
   */
  classes?: readonly string[];
  /** Feature columns, in this order; default: every column except the label and owner columns. */
  features?: string[];
  /**
   * What to do with a row whose feature value is missing (see `missingValues`):
   * 'drop' (default) skips the row; 'mean' fills the value with its column's mean over the rows
   * where it is present. Rows with a missing label or owner are always skipped. Either way the
   * count is reported in `droppedRows` / `imputedValues`.
   */
  missing?: 'drop' | 'mean';
  /** Strings (compared after trimming) that mean "no value"; default DEFAULT_MISSING_VALUES. */
  missingValues?: readonly string[];
  delimiter?: string;
  /** Dataset name; default: the file name. */
  name?: string;
}

export interface CsvDataset extends Dataset {
  x: Float32Array;
  featureNames: string[];
  /** `classNames[c]` is the label text of class c. */
  classNames: string[];
  /**
   * How labels became classes: 'index' (every label a whole number 0..255, used as is), 'names'
   * (this file's own distinct labels, sorted: another file's may differ) or 'classes' (the given
   * `classes` list).
   */
  labelKind: 'index' | 'names' | 'classes';
  /** Rows skipped because a label, owner, or (with missing: 'drop') a feature value was missing. */
  droppedRows: number;
  /** `droppedRows` by the first missing value of the row: its label, its owner, or a feature value. */
  droppedBy: { label: number; owner: number; feature: number };
  /** Feature values filled with the column mean (missing: 'mean'). */
  imputedValues: number;
}

/** Growable float32 buffer, so rows can be appended without knowing n in advance. */
class FloatBuffer {
  data = new Float32Array(1 << 16);
  length = 0;
  push(value: number): void {
    if (this.length === this.data.length) {
      const bigger = new Float32Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.length++] = value;
  }
  toArray(): Float32Array {
    return this.data.slice(0, this.length);
  }
}

/** Interns strings as first-seen ids, then renumbers them in sorted order (numeric order if all are numbers). */
class SortedVocabulary {
  private readonly ids = new Map<string, number>();
  readonly firstSeen: string[] = [];
  /** The 1-based line where each first-seen value first occurs. */
  readonly firstLine: number[] = [];
  readonly rowIds: number[] = [];
  /** Interns `value` and returns its id, without recording a row. */
  intern(value: string, line = 0): number {
    let id = this.ids.get(value);
    if (id === undefined) {
      id = this.firstSeen.length;
      this.ids.set(value, id);
      this.firstSeen.push(value);
      this.firstLine.push(line);
    }
    return id;
  }
  add(value: string): void {
    this.rowIds.push(this.intern(value));
  }
  /** Sorted names (numerically if all are numbers and `numericOrder`) and, for each first-seen id, its index in the sorted names. */
  sorted(numericOrder = true): { names: string[]; rank: Uint32Array } {
    const numeric = numericOrder && this.firstSeen.every((v) => v.trim() !== '' && Number.isFinite(Number(v)));
    const names = [...this.firstSeen].sort(numeric ? (a, b) => Number(a) - Number(b) || (a < b ? -1 : a > b ? 1 : 0) : (a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const position = new Map(names.map((name, i) => [name, i]));
    return { names, rank: Uint32Array.from(this.firstSeen, (v) => position.get(v)!) };
  }
}

/** A label "is a number" when written in decimal notation: 7, -1, 3.5, .5, 1e2 (not 0x1f, not Infinity). */
const DECIMAL_NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;
/** The class index a numeric label stands for, or undefined if it is none (negative, fractional, above 255). */
function classIndex(label: string): number | undefined {
  const value = Number(label);
  return Number.isInteger(value) && value >= 0 && value <= 255 ? value : undefined;
}

/**
 * A classification dataset from any CSV file (gzipped or not) with a header row.
 *
 * - Labels (trimmed), with `classes` given: each must be one of them, class c is `classes[c]`.
 *   Without it: a label is numeric if written in decimal notation (7, 3.0, -1, 3.5, 1e2). If every
 *   label is numeric, each must be a whole number 0..255 and is the class index itself (3 and 3.0
 *   are class 3; classes = max + 1, classNames '0', '1', …); a negative, fractional or larger one
 *   is an error naming the file, line, column and value. Otherwise every label is a name: the
 *   distinct names, sorted by code point, are `classNames` (at most 256). Labels are checked and
 *   counted on every row with a label, including rows dropped for missing features.
 * - Owners: the distinct owner texts of the kept rows, sorted the same way, are `ownerNames`;
 *   `owners[i]` indexes them.
 * - Features must be numbers (JavaScript `Number` syntax, finite); anything else that is not a
 *   missing value is an error naming the file, line and column.
 * - Missing values (`missingValues`, by default '', NA, N/A, NaN, null, None, ?) follow `missing`.
 */
export async function loadCsvDataset(file: string, opts: CsvDatasetOptions): Promise<CsvDataset> {
  const missingValues = new Set(opts.missingValues ?? DEFAULT_MISSING_VALUES);
  const isMissing = (value: string | undefined): boolean => value === undefined || missingValues.has(value.trim());
  const policy = opts.missing ?? 'drop';
  if (policy !== 'drop' && policy !== 'mean') throw new Error(`loadCsvDataset: missing must be 'drop' or 'mean', got ${JSON.stringify(policy)}`);
  const given = opts.classes?.map((c) => c.trim());
  const givenIndex = new Map(given?.map((c, i) => [c, i]));
  if (given) {
    if (given.length === 0 || given.length > 256) throw new Error(`loadCsvDataset: classes must list 1 to 256 names, got ${given.length}`);
    if (givenIndex.size !== given.length) throw new Error(`loadCsvDataset: classes lists ${JSON.stringify(given.find((c, i) => given.indexOf(c) !== i))} twice`);
  }

  const values = new FloatBuffer();
  const labels = new SortedVocabulary();
  const owners = new SortedVocabulary();
  let featureNames: string[] = [];
  let featureColumns: number[] = [];
  let labelColumn = -1;
  let ownerColumn = -1;
  let header: string[] | undefined;
  const droppedBy = { label: 0, owner: 0, feature: 0 };
  let rowValues: number[] = [];

  await readCsvRecords(file, ({ fields, line }) => {
    if (!header) {
      header = fields.map((f) => f.trim());
      const column = (name: string, role: string): number => {
        const index = header!.indexOf(name);
        if (index < 0) throw new Error(`${file}: no ${role} column ${JSON.stringify(name)} (columns: ${header!.join(', ')})`);
        return index;
      };
      labelColumn = column(opts.label, 'label');
      ownerColumn = opts.owner === undefined || (opts.ownerOptional && !header.includes(opts.owner)) ? -1 : column(opts.owner, 'owner');
      featureNames = opts.features ?? header.filter((_, i) => i !== labelColumn && i !== ownerColumn);
      featureColumns = featureNames.map((name) => column(name, 'feature'));
      if (featureColumns.length === 0) throw new Error(`${file}: no feature columns`);
      rowValues = new Array(featureColumns.length);
      return;
    }
    if (fields.length !== header.length) throw new Error(`${file}: line ${line} has ${fields.length} fields, the header has ${header.length}`);
    const label = fields[labelColumn];
    const owner = ownerColumn >= 0 ? fields[ownerColumn] : undefined;
    if (isMissing(label)) {
      droppedBy.label++;
      return;
    }
    // Every labelled row's class counts (and is checked), also when the row is dropped below, so
    // class indices do not depend on the missing-value policy.
    const labelText = label.trim();
    if (given && !givenIndex.has(labelText)) {
      throw new Error(`${file}: line ${line}, column ${opts.label}: ${JSON.stringify(labelText)} is not one of the classes given (${given.join(', ')})`);
    }
    labels.intern(labelText, line);
    if (ownerColumn >= 0 && isMissing(owner)) {
      droppedBy.owner++;
      return;
    }
    let rowHasMissing = false;
    for (let f = 0; f < featureColumns.length; f++) {
      const text = fields[featureColumns[f]];
      if (isMissing(text)) {
        rowValues[f] = NaN;
        rowHasMissing = true;
        continue;
      }
      const value = Number(text);
      if (!Number.isFinite(value)) throw new Error(`${file}: line ${line}, column ${featureNames[f]}: ${JSON.stringify(text)} is not a number (nor a missing value)`);
      // Values become float32: beyond its range they would train as Infinity.
      if (Math.abs(value) > FLOAT32_MAX) throw new Error(`${file}: line ${line}, column ${featureNames[f]}: ${JSON.stringify(text)} is beyond the float32 range (±3.4e38)`);
      rowValues[f] = value;
    }
    if (rowHasMissing && policy === 'drop') {
      droppedBy.feature++;
      return;
    }
    for (const v of rowValues) values.push(v);
    labels.add(labelText);
    if (owner !== undefined) owners.add(owner.trim());
  }, { delimiter: opts.delimiter });
  if (!header) throw new Error(`${file}: empty CSV (no header row)`);

  const features = featureColumns.length;
  const x = values.toArray();
  const n = x.length / features;
  const imputedValues = policy === 'mean' ? imputeColumnMeans(x, n, features, file, featureNames) : 0;

  let classNames: string[];
  let labelKind: CsvDataset['labelKind'];
  const labelIndex = new Uint8Array(n);
  if (given) {
    labelKind = 'classes';
    classNames = given;
    for (let i = 0; i < n; i++) labelIndex[i] = givenIndex.get(labels.firstSeen[labels.rowIds[i]])!;
  } else if (labels.firstSeen.every((v) => DECIMAL_NUMBER.test(v))) {
    labelKind = 'index';
    // Labels are interned in file order: the first one that is no class index is on the first such line.
    const bad = labels.firstSeen.findIndex((v) => classIndex(v) === undefined);
    if (bad >= 0) {
      throw new Error(`${file}: line ${labels.firstLine[bad]}, column ${opts.label}: ${JSON.stringify(labels.firstSeen[bad])}: labels must be class indices 0..255 or names (every label here is a number, so each must be a whole number 0..255)`);
    }
    const index = labels.firstSeen.map((v) => classIndex(v)!);
    const classes = index.reduce((max, c) => Math.max(max, c + 1), 0);
    classNames = Array.from({ length: classes }, (_, c) => String(c));
    for (let i = 0; i < n; i++) labelIndex[i] = index[labels.rowIds[i]];
  } else {
    labelKind = 'names';
    const { names, rank } = labels.sorted(false);
    if (names.length > 256) throw new Error(`${file}: ${names.length} distinct labels in ${opts.label}; at most 256 classes are supported`);
    classNames = names;
    for (let i = 0; i < n; i++) labelIndex[i] = rank[labels.rowIds[i]];
  }

  const dataset: CsvDataset = {
    n,
    features,
    classes: classNames.length,
    x,
    labels: labelIndex,
    featureNames,
    classNames,
    labelKind,
    droppedRows: droppedBy.label + droppedBy.owner + droppedBy.feature,
    droppedBy,
    imputedValues,
    name: opts.name ?? file.split(/[\\/]/).pop()!,
  };
  if (ownerColumn >= 0) {
    const { names, rank } = owners.sorted();
    dataset.ownerNames = names;
    dataset.owners = Uint32Array.from(owners.rowIds, (id) => rank[id]);
  }
  return dataset;
}

/** Replaces NaN by the column mean of the present values; returns how many values were filled. */
function imputeColumnMeans(x: Float32Array, n: number, features: number, file: string, featureNames: string[]): number {
  const sum = new Float64Array(features);
  const count = new Float64Array(features);
  for (let i = 0; i < n; i++) {
    for (let f = 0; f < features; f++) {
      const v = x[i * features + f];
      if (!Number.isNaN(v)) {
        sum[f] += v;
        count[f]++;
      }
    }
  }
  let filled = 0;
  for (let f = 0; f < features; f++) {
    if (count[f] === 0 && n > 0) throw new Error(`${file}: column ${featureNames[f]} has no values at all; cannot fill it with a mean`);
    const mean = sum[f] / count[f];
    for (let i = 0; i < n; i++) {
      if (Number.isNaN(x[i * features + f])) {
        x[i * features + f] = mean;
        filled++;
      }
    }
  }
  return filled;
}
