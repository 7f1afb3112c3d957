import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCsvDataset } from '../agent/data';
import { startAedes, type TestBroker } from './helpers/brokers';
import { MAIN, startAgent, type AgentProcess } from './helpers/gateway';

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

/**
 * A real agent process (dist/, against aedes) on a CSV given only through the environment: what it
 * logs at start about the rows it dropped and about class indices of label names.
 */
describe.skipIf(!existsSync(MAIN))('fedgate agent on a CSV file: what it says at start', { timeout: 60_000 }, () => {
  let broker: TestBroker;
  beforeAll(async () => {
    broker = await startAedes();
  });
  afterAll(async () => {
    await broker?.close();
  });

  // 300 rows of pets, rows 10 and 20 without humidity.
  const pets = () => write('pets-300.csv', ['temp,humidity,label', ...Array.from({ length: 300 }, (_, i) => `${i % 30},${i === 10 || i === 20 ? '' : i % 7},${['cat', 'dog', 'bird'][i % 3]}`)].join('\n') + '\n');
  let gateways = 0;
  const launch = (env: NodeJS.ProcessEnv): AgentProcess => {
    const id = `gw-csv${gateways++}`;
    const stateDir = mkdtempSync(path.join(dir, 'state-'));
    return startAgent(['--broker', broker.url, '--node-id', id, '--state-dir', stateDir, '--max-cpu-load', '1', '--no-profile'], { FEDGATE_DATA_DATASET: 'csv', FEDGATE_LOG_LEVEL: 'info', ...env });
  };

  it('logs the rows dropped and why (info), and warns once that sorted label names are this gateway\'s own classes', async () => {
    const agent = launch({ FEDGATE_DATA_CSV_FILE: pets() });
    try {
      const info = await agent.waitForLog('data.csv: 300 rows read, 298 kept, 2 dropped (2 with a missing feature value)');
      expect(info).toMatchObject({ level: 30, rows: 300, kept: 298, training: 298, droppedBy: { label: 0, owner: 0, feature: 2 }, imputedValues: 0 });
      const warning = "data.csv: class indices are this gateway's own sorted label names (bird=0, cat=1, dog=2) and differ across gateways unless data.csv.classes is set";
      await agent.waitForLog(warning, (l) => l.level === 40);
      await agent.waitForLog('agent started');
      expect(agent.lines.filter((l) => l.msg === warning)).toHaveLength(1);
    } finally {
      agent.kill('SIGKILL');
    }
  });

  it('with data.csv.classes (FEDGATE_DATA_CSV_CLASSES=bird,cat,dog) does not warn; fills with means under FEDGATE_DATA_CSV_MISSING=mean; refuses a label outside the list', async () => {
    const file = pets();
    const agent = launch({ FEDGATE_DATA_CSV_FILE: file, FEDGATE_DATA_CSV_CLASSES: 'bird,cat,dog', FEDGATE_DATA_CSV_MISSING: 'mean' });
    try {
      await agent.waitForLog('data.csv: 300 rows read, 300 kept, none dropped; 2 missing feature values filled with their column mean', (l) => l.level === 30);
      await agent.waitForLog('agent started');
      expect(agent.lines.filter((l) => l.level === 40 && l.msg.startsWith('data.csv'))).toEqual([]);
    } finally {
      agent.kill('SIGKILL');
    }
    const refused = launch({ FEDGATE_DATA_CSV_FILE: file, FEDGATE_DATA_CSV_CLASSES: 'cat,dog' });
    const { code } = await refused.exited;
    expect(code).not.toBe(0);
    expect(refused.stderr()).toContain(`${file}: line 4, column label: "bird" is not one of the classes given (cat, dog)`);
  });
});
