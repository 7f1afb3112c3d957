import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { classCounts, femnistWriterCount, loadCsvDataset, loadFemnist, loadLeafJson, partition, partitionByOwner, select, splitCsvRecord } from '../agent/data';

const repoRoot = path.resolve(__dirname, '..');
const dataDir = process.env.FEDGATE_DATA_DIR ?? path.resolve(repoRoot, '../shared/data');
const femnistDir = path.join(dataDir, 'femnist');
const haveFemnist = existsSync(path.join(femnistDir, 'writers.json'));
if (!haveFemnist) console.warn(`FEMNIST tests skipped: ${femnistDir} is absent (set FEDGATE_DATA_DIR to the folder holding femnist/)`);

describe.skipIf(!haveFemnist)(`loadFemnist (${femnistDir})`, () => {
  it('has 105 writers, 14708 train / 1685 test rows, 62 classes', () => {
    const train = loadFemnist(femnistDir, 'train');
    const test = loadFemnist(femnistDir, 'test');
    expect(train).toMatchObject({ n: 14708, features: 784, classes: 62, name: 'femnist-train' });
    expect(test).toMatchObject({ n: 1685, features: 784, classes: 62, name: 'femnist-test' });
    expect(train.x).toBeInstanceOf(Uint8Array);
    expect(train.ownerNames).toHaveLength(105);
    expect(new Set(train.owners).size).toBe(105);
    expect(new Set(test.owners).size).toBe(105);
    // All 62 classes occur in train; 0 is background as in MNIST (the corner pixel of every image).
    expect(classCounts(train.labels, 62).every((c) => c > 0)).toBe(true);
    let cornerInk = 0;
    for (let i = 0; i < train.n; i++) cornerInk += train.x[i * 784];
    expect(cornerInk).toBe(0);

    const byWriter = partitionByOwner(train.owners!);
    expect(byWriter).toHaveLength(105);
    expect(byWriter.reduce((s, w) => s + w.indices.length, 0)).toBe(14708);
    const tenGateways = partition(train, { kind: 'owner' }, 10, 1);
    expect(tenGateways.reduce((s, shard) => s + shard.length, 0)).toBe(14708);
    expect(partition(train, { kind: 'owner' }, 105, 1).map((s) => s.length)).toEqual(byWriter.map((w) => w.indices.length));
  });

  // simulate --partition owner checks --clients against this before starting any gateway.
  it('femnistWriterCount: the writers with rows, from the writers file alone (as many as an owner partition can serve)', () => {
    expect(femnistWriterCount(femnistDir, 'train')).toBe(partitionByOwner(loadFemnist(femnistDir, 'train').owners!).length);
    expect(femnistWriterCount(femnistDir, 'test')).toBe(105);
  });
});

describe('CSV and LEAF JSON loaders on files written by the test', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fedgate-data-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, text: string | Buffer): string => {
    const file = path.join(dir, name);
    writeFileSync(file, text);
    return file;
  };

  const sensorCsv = [
    'temp,humidity,state,device,note',
    '21.5,40,ok,gw-b,"calm, dry"',
    '22.0,NA,ok,gw-a,x',
    '35.5,80,alarm,gw-a,"said ""hot"""',
    '19,,idle,gw-c,"two',
    'lines"',
    '20,41,NA,gw-b,no label',
    '18,39,idle,,no owner',
    '',
    '30,70,alarm,gw-c,z',
  ].join('\r\n');

  it('splitCsvRecord handles quotes, escaped quotes and open quotes', () => {
    expect(splitCsvRecord('a,"b,c","d ""e"""')).toEqual(['a', 'b,c', 'd "e"']);
    expect(splitCsvRecord('a,"open')).toBeUndefined();
    expect(splitCsvRecord('')).toEqual(['']);
  });

  it('maps string labels to sorted classes, owners to sorted names, and drops rows with missing values', async () => {
    const file = write('sensors.csv', sensorCsv);
    const ds = await loadCsvDataset(file, { label: 'state', owner: 'device', features: ['temp', 'humidity'] });
    expect(ds.classNames).toEqual(['alarm', 'idle', 'ok']);
    expect(ds.featureNames).toEqual(['temp', 'humidity']);
    // Kept: gw-b 21.5/40 ok, gw-a 35.5/80 alarm, gw-c 30/70 alarm. Dropped: missing humidity (2),
    // missing label (1), missing owner (1).
    expect(ds.n).toBe(3);
    expect(ds.droppedRows).toBe(4);
    expect(Array.from(ds.x)).toEqual([21.5, 40, 35.5, 80, 30, 70]);
    expect(Array.from(ds.labels)).toEqual([2, 0, 0]);
    expect(ds.ownerNames).toEqual(['gw-a', 'gw-b', 'gw-c']);
    expect(Array.from(ds.owners!)).toEqual([1, 0, 2]);
    expect(ds.classes).toBe(3);
  });

  it("fills missing feature values with the column mean under missing: 'mean', also from gzip", async () => {
    const file = write('sensors.csv.gz', gzipSync(Buffer.from(sensorCsv)));
    const ds = await loadCsvDataset(file, { label: 'state', owner: 'device', features: ['temp', 'humidity'], missing: 'mean' });
    expect(ds.n).toBe(5);
    expect(ds.droppedRows).toBe(2);
    expect(ds.imputedValues).toBe(2);
    const humidityMean = (40 + 80 + 70) / 3;
    expect(Array.from(ds.x)).toEqual([21.5, 40, 22, Math.fround(humidityMean), 35.5, 80, 19, Math.fround(humidityMean), 30, 70]);
    expect(Array.from(ds.labels)).toEqual([2, 2, 0, 1, 0]);
  });

  it('uses integer labels as class indices and all other columns as features by default', async () => {
    const file = write('digits.csv', 'label,p0,p1\n3,0,255\n0,1,2\n3,4,5\n');
    const ds = await loadCsvDataset(file, { label: 'label' });
    expect(ds).toMatchObject({ n: 3, features: 2, classes: 4, featureNames: ['p0', 'p1'], classNames: ['0', '1', '2', '3'] });
    expect(Array.from(ds.labels)).toEqual([3, 0, 3]);
    expect(ds.owners).toBeUndefined();
    expect(select(ds, [2]).x).toEqual(Float32Array.from([4, 5]));
  });

  // Numeric labels that are no class index were once sorted as names (9.5 class 0); now refused (see data-csv.test.ts).
  it('refuses numeric non-integer labels and reports bad input clearly', async () => {
    const grades = write('grades.csv', 'score,grade\n1,10.5\n2,9.5\n3,10.5\n');
    await expect(loadCsvDataset(grades, { label: 'grade' })).rejects.toThrow(`${grades}: line 2, column grade: "10.5": labels must be class indices 0..255 or names`);
    const bad = write('bad.csv', 'a,label\n1,x\nhello,y\n');
    await expect(loadCsvDataset(bad, { label: 'label' })).rejects.toThrow(/bad\.csv: line 3, column a: "hello" is not a number/);
    await expect(loadCsvDataset(bad, { label: 'nope' })).rejects.toThrow(/no label column "nope" \(columns: a, label\)/);
    const ragged = write('ragged.csv', 'a,label\n1,x,extra\n');
    await expect(loadCsvDataset(ragged, { label: 'label' })).rejects.toThrow(/line 2 has 3 fields, the header has 2/);
    const truncated = write('truncated.csv.gz', gzipSync(Buffer.from(sensorCsv.repeat(50))).subarray(0, 60));
    await expect(loadCsvDataset(truncated, { label: 'state' })).rejects.toThrow(/unexpected end of file/);
  });

  // Regressions: an agent's CSV with the default owner column read it as a feature ("dev-a" is not a
  // number) unless one owner was asked for; 1e39 passed the finiteness check and trained as Infinity.
  it('keeps an owner column out of the features where it is present (ownerOptional), and refuses values beyond float32', async () => {
    const owned = write('owned.csv', 'owner,t,label\ndev-a,1.5,0\ndev-b,2.5,1\n');
    const ds = await loadCsvDataset(owned, { label: 'label', owner: 'owner', ownerOptional: true });
    expect(ds).toMatchObject({ n: 2, features: 1, featureNames: ['t'], ownerNames: ['dev-a', 'dev-b'] });
    const plain = write('plain.csv', 't,label\n1.5,0\n');
    const unowned = await loadCsvDataset(plain, { label: 'label', owner: 'owner', ownerOptional: true });
    expect(unowned).toMatchObject({ n: 1, features: 1 });
    expect(unowned.owners).toBeUndefined();
    await expect(loadCsvDataset(plain, { label: 'label', owner: 'owner' })).rejects.toThrow(/no owner column "owner" \(columns: t, label\)/);
    const huge = write('huge.csv', 't,label\n1e39,0\n');
    await expect(loadCsvDataset(huge, { label: 'label' })).rejects.toThrow(`${huge}: line 2, column t: "1e39" is beyond the float32 range (±3.4e38)`);
  });

  it('reads LEAF JSON from a file or a folder, keeping users as owners', () => {
    const leaf = (users: string[], rows: Record<string, { x: number[][]; y: number[] }>) =>
      JSON.stringify({ users, num_samples: users.map((u) => rows[u].y.length), user_data: rows });
    const a = write('leaf-a.json', leaf(['f001_01', 'f002_07'], { f001_01: { x: [[1, 0.5, 0], [1, 1, 1]], y: [3, 0] }, f002_07: { x: [[0.25, 0.75, 1]], y: [61] } }));
    write('leaf-b.json', leaf(['f003_12'], { f003_12: { x: [[0, 0, 1]], y: [7] } }));

    const one = loadLeafJson(a);
    expect(one).toMatchObject({ n: 3, features: 3, classes: 62, ownerNames: ['f001_01', 'f002_07'] });
    expect(Array.from(one.x)).toEqual([1, 0.5, 0, 1, 1, 1, 0.25, 0.75, 1]);
    expect(Array.from(one.labels)).toEqual([3, 0, 61]);
    expect(Array.from(one.owners!)).toEqual([0, 0, 1]);

    const inverted = loadLeafJson(a, { invert: true });
    expect(Array.from(inverted.x.subarray(0, 3))).toEqual([0, 0.5, 1]);

    const leafDir = path.join(dir, 'leaf');
    mkdirSync(leafDir);
    writeFileSync(path.join(leafDir, '1.json'), readFileSync(a));
    writeFileSync(path.join(leafDir, '2.json'), readFileSync(path.join(dir, 'leaf-b.json')));
    const all = loadLeafJson(leafDir);
    expect(all.n).toBe(4);
    expect(all.ownerNames).toEqual(['f001_01', 'f002_07', 'f003_12']);
    expect(Array.from(all.labels)).toEqual([3, 0, 61, 7]);

    const broken = write('broken.json', JSON.stringify({ users: ['u'], user_data: { u: { x: [[1, 2], [3]], y: [0, 1] } } }));
    expect(() => loadLeafJson(broken)).toThrow(/user u has a row of 1 values, expected 2/);
    expect(() => loadLeafJson(write('notleaf.json', '{"a":1}'))).toThrow(/not a LEAF JSON file/);
  });
});
