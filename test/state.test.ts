import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  CorruptStateError,
  LOCK_FILE,
  Outbox,
  StateDir,
  StateLockedError,
  outboxId,
  resolveStateDir,
  writeFileAtomic,
} from '../agent/state';

const root = mkdtempSync(path.join(tmpdir(), 'fedgate-state-'));
let n = 0;
const fresh = () => path.join(root, `s${n++}`);

const open: StateDir[] = [];
async function openState(dir: string, opts: Parameters<typeof StateDir.open>[0] = {}): Promise<StateDir> {
  const s = await StateDir.open({ dir, ...opts });
  open.push(s);
  return s;
}
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

describe('resolveStateDir', () => {
  it('uses the setting, else $STATE_DIRECTORY (the first of several), else ./fedgate-state', () => {
    expect(resolveStateDir('/data/fg', {}, '/cwd')).toBe('/data/fg');
    expect(resolveStateDir('rel', {}, '/cwd')).toBe('/cwd/rel');
    expect(resolveStateDir(undefined, { STATE_DIRECTORY: '/var/lib/fedgate/agent' }, '/cwd')).toBe('/var/lib/fedgate/agent');
    expect(resolveStateDir(undefined, { STATE_DIRECTORY: '/var/lib/a:/var/lib/b' }, '/cwd')).toBe('/var/lib/a');
    expect(resolveStateDir(undefined, {}, '/cwd')).toBe('/cwd/fedgate-state');
  });

  it('creates the directory private to its user', async () => {
    const dir = fresh();
    const s = await openState(dir);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(s.dir).toBe(dir);
    expect(s.residualFile).toBe(path.join(dir, 'residual.fgef'));
    expect(s.outbox.dir).toBe(path.join(dir, 'outbox'));
    expect(readdirSync(dir).sort()).toEqual([LOCK_FILE, 'outbox']);
  });
});

describe('creating the state directory', () => {
  const exitCode = (err: Error) => (err as Error & { exitCode?: number }).exitCode;

  it('makes every missing level, private to its user', async () => {
    const dir = path.join(fresh(), 'a', 'b');
    const s = await openState(dir);
    expect(s.dir).toBe(dir);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(path.dirname(dir)).mode & 0o777).toBe(0o700);
  });

  // Regression: Node's recursive mkdir loops for ever, at full CPU, on ENOENT from procfs.
  it('on /proc/nope: one clear error naming the path and the setting (exit status 78), at once', async () => {
    const t0 = Date.now();
    const err = await rejection(StateDir.open({ dir: '/proc/nope' }));
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(err.message).toBe('cannot create the state directory /proc/nope (stateDir / --state-dir): /proc does not take new folders (mkdir /proc/nope: ENOENT)');
    expect(exitCode(err)).toBe(78);
    const deeper = await rejection(StateDir.open({ dir: '/proc/nope/deeper' }));
    expect(deeper.message).toBe('cannot create the state directory /proc/nope/deeper (stateDir / --state-dir): /proc does not take new folders (mkdir /proc/nope: ENOENT)');
  }, 10_000);

  it('names $STATE_DIRECTORY when the path came from systemd', async () => {
    const err = await rejection(StateDir.open({ env: { STATE_DIRECTORY: '/proc/nope' } }));
    expect(err.message).toBe('cannot create the state directory /proc/nope ($STATE_DIRECTORY, from systemd\'s StateDirectory=; stateDir / --state-dir overrides it): /proc does not take new folders (mkdir /proc/nope: ENOENT)');
  });

  it('a file in the way (ENOTDIR) or at the path itself: says which', async () => {
    const dir = fresh();
    mkdirSync(dir);
    const file = path.join(dir, 'file');
    writeFileSync(file, 'x');
    const below = await rejection(StateDir.open({ dir: path.join(file, 'a', 'b') }));
    expect(below.message).toBe(`cannot create the state directory ${path.join(file, 'a', 'b')} (stateDir / --state-dir): ${file} is not a directory`);
    expect(exitCode(below)).toBe(78);
    const at = await rejection(StateDir.open({ dir: file }));
    expect(at.message).toBe(`cannot create the state directory ${file} (stateDir / --state-dir): ${file} is not a directory`);
  });

  it.skipIf(process.getuid?.() === 0)('no permission (EACCES): says where', async () => {
    const dir = fresh();
    mkdirSync(dir, { mode: 0o500 });
    try {
      const err = await rejection(StateDir.open({ dir: path.join(dir, 'sub') }));
      expect(err.message).toBe(`cannot create the state directory ${path.join(dir, 'sub')} (stateDir / --state-dir): no permission to create ${path.join(dir, 'sub')} (EACCES)`);
      expect(exitCode(err)).toBe(78);
      const locked = await rejection(StateDir.open({ dir }));
      expect(locked.message).toBe(`cannot write in the state directory ${dir} (stateDir / --state-dir): permission denied (EACCES)`);
    } finally {
      chmodSync(dir, 0o700);
    }
  });
});

describe('node id', () => {
  it('is generated once and kept across restarts', async () => {
    const dir = fresh();
    const first = await openState(dir);
    const a = await first.nodeId();
    expect(a.source).toBe('generated');
    expect(a.id).toMatch(/^gw-[0-9a-f]{8}$/);
    await first.close();
    const second = await openState(dir);
    expect(await second.nodeId()).toEqual({ id: a.id, source: 'stored' });
    expect(readFileSync(path.join(dir, 'node-id'), 'utf8')).toBe(a.id + '\n');
  });

  it('comes from config when set, and stays after the setting is removed', async () => {
    const dir = fresh();
    const s = await openState(dir);
    expect(await s.nodeId('gw-kitchen')).toEqual({ id: 'gw-kitchen', source: 'config' });
    expect(await s.nodeId()).toEqual({ id: 'gw-kitchen', source: 'stored' });
    expect(await s.nodeId('gw-kitchen')).toEqual({ id: 'gw-kitchen', source: 'config' });
    await expect(s.nodeId('bad/id')).rejects.toThrow('node id "bad/id" contains "/"');
  });

  // Regression: `--node-id gw-5 --state-dir st/gw-0` rewrote the node-id file and gw-5 took over gw-0's
  // applied config layers and versions, its outbox and its error-feedback residual, without a word.
  it('is refused (exit status 78) when the directory holds another node\'s id, and the directory is left as it was', async () => {
    const dir = fresh();
    const s = await openState(dir);
    await s.nodeId('gw-0');
    await s.saveAppliedConfig(4, { node: { version: 4, config: { training: { threads: 2 } } } }, { fleet: 0, node: 4 });
    const err = await rejection(s.nodeId('gw-5'));
    expect(err.message).toBe(`state directory ${dir} belongs to node id gw-0, not gw-5: its applied configuration, outbox and residual are gw-0's; use --node-id gw-0 (node.id), another --state-dir (stateDir) for gw-5, or empty the directory`);
    expect((err as Error & { exitCode?: number }).exitCode).toBe(78);
    expect(readFileSync(path.join(dir, 'node-id'), 'utf8')).toBe('gw-0\n');
    expect((await s.appliedConfig())?.version).toBe(4);
    // A generated id is an identity too.
    const other = await openState(fresh());
    const generated = (await other.nodeId()).id;
    await expect(other.nodeId('gw-kitchen')).rejects.toThrow(`belongs to node id ${generated}, not gw-kitchen:`);
  });

  it('is never used when the stored file is corrupt: moved aside with a clear error', async () => {
    const dir = fresh();
    const s = await openState(dir);
    writeFileSync(path.join(dir, 'node-id'), 'gw-1 #\n');
    const err = await rejection(s.nodeId());
    expect(err).toBeInstanceOf(CorruptStateError);
    const moved = (err as CorruptStateError).movedTo;
    expect(path.basename(moved)).toMatch(/^node-id\.corrupt-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$/);
    expect(err.message).toBe(`state file ${path.join(dir, 'node-id')} is corrupt (node id "gw-1 #" contains "#", which is not allowed in an MQTT topic level); it was moved aside to ${moved} and was not used`);
    expect(readFileSync(moved, 'utf8')).toBe('gw-1 #\n');
    expect(existsSync(path.join(dir, 'node-id'))).toBe(false);
    expect((await s.nodeId()).source).toBe('generated');
  });
});

describe('applied config', () => {
  it('keeps the version and config across restarts; versions never go down', async () => {
    const dir = fresh();
    const s = await openState(dir);
    expect(await s.appliedConfig()).toBeUndefined();
    await s.saveAppliedConfig(3, { training: { threads: 2 } }, { fleet: 1, node: 2 });
    await s.saveAppliedConfig(3, { training: { threads: 2 } }, { fleet: 1, node: 2 });
    await expect(s.saveAppliedConfig(2, {})).rejects.toThrow('config version 2 is older than the applied version 3');
    await expect(s.saveAppliedConfig(-1, {})).rejects.toThrow('config version must be a whole number from 0 to 9007199254740991 (2^53 - 1), got -1');
    // Beyond 2^53 - 1 a double no longer tells versions apart: refused, and the stored file is untouched.
    await expect(s.saveAppliedConfig(1e308, {})).rejects.toThrow('config version must be a whole number from 0 to 9007199254740991 (2^53 - 1), got 1e+308');
    await expect(s.saveAppliedConfig(2 ** 53, {})).rejects.toThrow('config version must be a whole number from 0 to 9007199254740991 (2^53 - 1), got 9007199254740992');
    await expect(s.saveAppliedConfig(3, {}, { fleet: 1e308 })).rejects.toThrow('config version 3 with sources: fleet must be a whole number from 0 to 9007199254740991 (2^53 - 1), got 1e+308');
    await s.close();
    const again = await openState(dir);
    const applied = await again.appliedConfig();
    expect(applied).toMatchObject({ version: 3, sources: { fleet: 1, node: 2 }, config: { training: { threads: 2 } } });
    expect(statSync(path.join(dir, 'applied-config.json')).mode & 0o777).toBe(0o600);
  });

  it('moves a corrupt file aside', async () => {
    const dir = fresh();
    const s = await openState(dir);
    writeFileSync(path.join(dir, 'applied-config.json'), '{"version": 3, "config": {');
    const err = await rejection(s.appliedConfig());
    expect(err).toBeInstanceOf(CorruptStateError);
    expect(err.message).toMatch(/applied-config\.json is corrupt \(.*JSON.*\); it was moved aside to .*applied-config\.json\.corrupt-.*Z and was not used$/);
    writeFileSync(path.join(dir, 'applied-config.json'), '{"version": "3", "appliedAt": "x", "config": {}}');
    await expect(s.appliedConfig()).rejects.toThrow('(version must be a whole number from 0 to 9007199254740991 (2^53 - 1), got "3")');
    // As an older build could write it: a version JSON cannot hold exactly.
    writeFileSync(path.join(dir, 'applied-config.json'), '{"version": 1e+308, "appliedAt": "x", "config": {}}');
    await expect(s.appliedConfig()).rejects.toThrow('(version must be a whole number from 0 to 9007199254740991 (2^53 - 1), got 1e+308)');
    writeFileSync(path.join(dir, 'applied-config.json'), '{"version": 3, "sources": {"node": 9007199254740993}, "appliedAt": "x", "config": {}}');
    await expect(s.appliedConfig()).rejects.toThrow('(sources must map names to versions (a whole number from 0 to 9007199254740991 (2^53 - 1) each))');
    expect(readdirSync(dir).filter((f) => f.startsWith('applied-config.json.corrupt-'))).toHaveLength(4);
    expect(await s.appliedConfig()).toBeUndefined();
  });
});

describe('lock', () => {
  it('refuses a second open of the same directory', async () => {
    const dir = fresh();
    await openState(dir);
    const err = await rejection(StateDir.open({ dir }));
    expect(err).toBeInstanceOf(StateLockedError);
    expect(err.message).toBe(`state directory ${dir} is in use by this process; two fedgate processes cannot share one state directory (give each its own stateDir, or stop the other one)`);
  });

  it('refuses a directory held by another live process, takes it over once that one is gone', async () => {
    const dir = fresh();
    mkdirSync(dir);
    const other = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    try {
      const started = readFileSync(`/proc/${other.pid}/stat`, 'utf8');
      const ticks = started.slice(started.lastIndexOf(')') + 2).split(' ')[19];
      writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: other.pid, started: ticks }));
      const err = await rejection(StateDir.open({ dir }));
      expect(err).toBeInstanceOf(StateLockedError);
      expect(err.message).toContain(`is in use by process ${other.pid};`);
      // The same pid with another start time is a reused pid: the lock is stale.
      writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: other.pid, started: '1' }));
      await (await openState(dir)).close();
      writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: other.pid, started: ticks }));
    } finally {
      other.kill('SIGKILL');
      await new Promise((r) => other.once('exit', r));
    }
    const s = await openState(dir);
    expect(JSON.parse(readFileSync(path.join(dir, LOCK_FILE), 'utf8')).pid).toBe(process.pid);
    await s.close();
    expect(existsSync(path.join(dir, LOCK_FILE))).toBe(false);
  });

  it('takes over a half-written lock', async () => {
    const dir = fresh();
    mkdirSync(dir);
    writeFileSync(path.join(dir, LOCK_FILE), '');
    await openState(dir);
  });
});

describe('outbox', () => {
  const payload = (k: number, len = 1000) => Uint8Array.from({ length: len }, (_, i) => (i * k) & 255);

  it('keeps pending updates across restarts, oldest round first', async () => {
    const dir = fresh();
    const s = await openState(dir);
    const e5 = await s.outbox.put(5, 'task-5-gw', { samples: 10 }, payload(5));
    await s.outbox.put(4, 'task-4-gw', { samples: 9 }, payload(4));
    expect(e5.id).toBe(outboxId(5, 'task-5-gw'));
    expect(e5.id).toMatch(/^r5-[0-9a-f]{16}$/);
    await s.close();
    const again = await openState(dir);
    const list = await again.outbox.list();
    expect(list.map((e) => [e.round, e.taskId, e.meta])).toEqual([[4, 'task-4-gw', { samples: 9 }], [5, 'task-5-gw', { samples: 10 }]]);
    expect(Buffer.compare(list[1].payload, Buffer.from(payload(5)))).toBe(0);
    expect(await again.outbox.remove(list[0].id)).toBe(true);
    expect(await again.outbox.remove(list[0].id)).toBe(false);
    expect((await again.outbox.list()).map((e) => e.round)).toEqual([5]);
    await expect(again.outbox.remove('../lock')).rejects.toThrow('"../lock" is not an outbox entry id');
  });

  it('stores the same update once', async () => {
    const box = (await openState(fresh())).outbox;
    await box.put(1, 't', { try: 1 }, payload(1));
    await box.put(1, 't', { try: 2 }, payload(1));
    expect((await box.list()).map((e) => e.meta)).toEqual([{ try: 2 }]);
  });

  it('refuses an entry over the size cap', async () => {
    const box = await Outbox.open(path.join(fresh(), 'outbox'), { maxEntryBytes: 2048 });
    await box.put(1, 't1', {}, payload(1, 1500));
    const err = await rejection(box.put(2, 't2', { node: 'gw-1' }, payload(2, 2048)));
    expect(err).toBeInstanceOf(RangeError);
    expect(err.message).toMatch(/^outbox entry for round 2 task t2 is \d+ bytes, above the cap of 2048$/);
    expect((await box.list()).map((e) => e.round)).toEqual([1]);
    await expect(box.put(-1, 't', {}, payload(1))).rejects.toThrow('round must be a whole number >= 0, got -1');
    await expect(box.put(1, '', {}, payload(1))).rejects.toThrow('taskId must be a non-empty string');
  });

  it('drops entries older than the age limit', async () => {
    let now = 1_000_000;
    const box = await Outbox.open(path.join(fresh(), 'outbox'), { maxAgeMs: 60_000, now: () => now });
    await box.put(1, 'old', {}, payload(1));
    now += 30_000;
    await box.put(2, 'new', {}, payload(2));
    now += 40_000;
    expect((await box.list()).map((e) => e.taskId)).toEqual(['new']);
    expect(readdirSync(box.dir)).toEqual([`${outboxId(2, 'new')}.fgo`]);
    now += 60_000;
    expect(await box.prune()).toBe(0);
  });

  it('ignores the temporary file of a crashed write, and cleans it on the next start', async () => {
    const dir = fresh();
    const s = await openState(dir);
    await s.outbox.put(7, 'done', {}, payload(7));
    // What a crash between write and rename leaves: a half-written temporary file.
    const tmp = path.join(dir, 'outbox', `.${outboxId(8, 'crashed')}.fgo.4242.0badf00d.tmp`);
    writeFileSync(tmp, Buffer.from('FGOB\x01\x00\x00\x00garbage'));
    expect((await s.outbox.list()).map((e) => e.round)).toEqual([7]);
    await s.close();
    const again = await openState(dir);
    expect(existsSync(tmp)).toBe(false);
    expect((await again.outbox.list()).map((e) => e.round)).toEqual([7]);
  });

  it('moves a corrupt entry aside and never returns it', async () => {
    const dir = fresh();
    const box = (await openState(dir)).outbox;
    const good = await box.put(1, 'good', {}, payload(1));
    const bad = await box.put(2, 'bad', {}, payload(2));
    const file = path.join(box.dir, `${bad.id}.fgo`);
    const bytes = readFileSync(file);
    bytes[bytes.length - 1] ^= 0xff; // one flipped payload bit
    writeFileSync(file, bytes);
    const truncated = await box.put(3, 'short', {}, payload(3));
    const tfile = path.join(box.dir, `${truncated.id}.fgo`);
    writeFileSync(tfile, readFileSync(tfile).subarray(0, 40));
    expect((await box.list()).map((e) => e.id)).toEqual([good.id]);
    const names = readdirSync(box.dir).sort();
    expect(names.filter((f) => f.endsWith('.fgo'))).toEqual([`${good.id}.fgo`]);
    expect(names.filter((f) => f.includes('.fgo.corrupt-'))).toHaveLength(2);
  });
});

describe('writeFileAtomic', () => {
  it('replaces the file whole and leaves no temporary file', async () => {
    const dir = fresh();
    mkdirSync(dir);
    const f = path.join(dir, 'x.json');
    await writeFileAtomic(f, 'one');
    await writeFileAtomic(f, 'two', 0o644);
    expect(readFileSync(f, 'utf8')).toBe('two');
    expect(readdirSync(dir)).toEqual(['x.json']);
    await expect(writeFileAtomic(path.join(dir, 'missing', 'y'), 'z')).rejects.toThrow(/ENOENT/);
  });
});

describe('session numbers', () => {
  it('grow on every start, even when the clock goes backwards (a gateway without a real-time clock)', async () => {
    const { StateDir } = await import('../agent/state');
    const { mkdtempSync, writeFileSync, readdirSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const path = await import('node:path');
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-session-'));
    const a = await StateDir.open({ dir });
    expect(await a.nextSession(1_800_000_000_000)).toBe(1_800_000_000_000);
    expect(await a.nextSession(1_000)).toBe(1_800_000_000_001); // booted in 1970: still higher
    expect(await a.nextSession(1_900_000_000_000)).toBe(1_900_000_000_000);
    await a.close();
    writeFileSync(path.join(dir, 'session'), 'garbage');
    const b = await StateDir.open({ dir });
    await expect(b.nextSession(5)).rejects.toThrow('not a session number');
    expect(readdirSync(dir).some((f) => f.startsWith('session.corrupt-'))).toBe(true);
    expect(await b.nextSession(7)).toBe(7); // the corrupt file was moved aside
    await b.close();
  });
});

describe('moving corrupt files aside', () => {
  it('keeps every copy, even two within the same millisecond', async () => {
    const { moveAside } = await import('../agent/state');
    const { mkdtempSync, writeFileSync, readdirSync, readFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const path = await import('node:path');
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-aside-'));
    const file = path.join(dir, 'x.json');
    const when = new Date('2026-12-03T20:00:00.000Z');
    writeFileSync(file, 'first');
    const a = await moveAside(file, when);
    writeFileSync(file, 'second');
    const b = await moveAside(file, when);
    expect(a).toBe(`${file}.corrupt-2026-12-03T20-00-00-000Z`);
    expect(b).toBe(`${file}.corrupt-2026-12-03T20-00-00-000Z-1`);
    expect([readFileSync(a, 'utf8'), readFileSync(b, 'utf8')]).toEqual(['first', 'second']);
    expect(readdirSync(dir)).toHaveLength(2);
  });
});
