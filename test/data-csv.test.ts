import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadCsvDataset } from '../agent/data';

const dir = mkdtempSync(path.join(tmpdir(), 'fedgate-csv-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const write = (name: string, text: string): string => {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
};
/** A CSV with a header `label,p0,p1` and one row per label (line i + 2 holds labels[i]). */
const digits = (name: string, labels: string[]): string => write(name, ['label,p0,p1', ...labels.map((l, i) => `${l},${i},${i + 1}`)].join('\n') + '\n');

describe('loadCsvDataset: the label rule', () => {
  // Regression: one -1 among the digits 0..9 switched the whole file to sorted-text classes ("0"
  // became class 1, 11 classes), and the aggregator then left the gateway out for "labels up to 10".
  it('refuses a numeric label that is no class index (negative, fractional, above 255), naming file, line, column and value', async () => {
    const labels = Array.from({ length: 20 }, (_, i) => String(i % 10));
    for (const [bad, name] of [['-1', 'negative'], ['3.5', 'fractional'], ['256', 'big']] as const) {
      const withBad = [...labels];
      withBad[15] = bad; // line 17
      const file = digits(`${name}.csv`, withBad);
      await expect(loadCsvDataset(file, { label: 'label' })).rejects.toThrow(
        `${file}: line 17, column label: "${bad}": labels must be class indices 0..255 or names (every label here is a number, so each must be a whole number 0..255)`,
      );
    }
  });

  it('names the first bad line in file order, also when that row is dropped for a missing feature', async () => {
    const file = write('first-bad.csv', 'label,p0\n1,0\n-2,NA\n2.5,1\n');
    await expect(loadCsvDataset(file, { label: 'label' })).rejects.toThrow(`${file}: line 3, column label: "-2": labels must be class indices 0..255 or names`);
  });

  it('takes whole numbers 0..255 as the class index itself, 3.0 and 03 as 3', async () => {
    const ds = await loadCsvDataset(digits('whole.csv', ['3.0', '0', '03', '255']), { label: 'label' });
    expect(ds.labelKind).toBe('index');
    expect(ds.classes).toBe(256);
    expect(Array.from(ds.labels)).toEqual([3, 0, 3, 255]);
  });

  it('reads labels as names when any one is not a number; names sort by code point, numeric-looking ones too', async () => {
    const ds = await loadCsvDataset(digits('names.csv', ['10', 'x', '9', '-1']), { label: 'label' });
    expect(ds.labelKind).toBe('names');
    expect(ds.classNames).toEqual(['-1', '10', '9', 'x']);
    expect(Array.from(ds.labels)).toEqual([1, 3, 2, 0]);
  });
});

describe('loadCsvDataset: a fleet-wide class list (classes)', () => {
  it('maps labels through the given list (class c is classes[c]), listing every class even where absent', async () => {
    const file = digits('pets.csv', ['dog', ' cat ', 'dog']);
    const ds = await loadCsvDataset(file, { label: 'label', classes: ['bird', 'cat', 'dog'] });
    expect(ds).toMatchObject({ labelKind: 'classes', classes: 3, classNames: ['bird', 'cat', 'dog'] });
    expect(Array.from(ds.labels)).toEqual([2, 1, 2]);
    // Without the list the same file has classes cat=0, dog=1: another gateway's may differ.
    const own = await loadCsvDataset(file, { label: 'label' });
    expect(own).toMatchObject({ labelKind: 'names', classNames: ['cat', 'dog'] });
    expect(Array.from(own.labels)).toEqual([1, 0, 1]);
  });

  it('refuses a label not in the list, naming the file, line, column and value; and a list with a name twice', async () => {
    const file = digits('cow.csv', ['cat', 'dog', 'cow']);
    await expect(loadCsvDataset(file, { label: 'label', classes: ['bird', 'cat', 'dog'] })).rejects.toThrow(
      `${file}: line 4, column label: "cow" is not one of the classes given (bird, cat, dog)`,
    );
    // Numeric-looking labels are names too once a list is given.
    await expect(loadCsvDataset(digits('num.csv', ['0']), { label: 'label', classes: ['bird'] })).rejects.toThrow('line 2, column label: "0" is not one of the classes given (bird)');
    await expect(loadCsvDataset(file, { label: 'label', classes: ['cat', 'dog', 'cat'] })).rejects.toThrow('loadCsvDataset: classes lists "cat" twice');
  });
});

describe('loadCsvDataset: dropped rows by reason', () => {
  it('counts rows dropped for a missing label, owner or feature value separately', async () => {
    const file = write('missing.csv', 'label,owner,p0\n0,a,1\nNA,a,2\n1,,3\n1,b,\n1,b,?\n0,b,4\n');
    const ds = await loadCsvDataset(file, { label: 'label', owner: 'owner' });
    expect(ds.n).toBe(2);
    expect(ds.droppedRows).toBe(4);
    expect(ds.droppedBy).toEqual({ label: 1, owner: 1, feature: 2 });
  });
});
