import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import mqtt from 'mqtt';
import pino from 'pino';
import { Aggregator, FedAvgStrategy, type AggregatorOptions, type RoundRecord } from '../agent/aggregator';
import { AnotherAggregatorError } from '../agent/aggregator/aggregator';
import { encode } from '../agent/compress';
import { mlp, initParams } from '../agent/model';
import { Topics, encodeFrames, FrameKind, Reassembler, type TaskMessage, type UpdateMeta } from '../agent/transport';
import { startAedes, startMosquitto, mosquittoMissing, type TestBroker } from './helpers/brokers';
import { MAIN, ROOT, sleep, until } from './helpers/gateway';

/**
 * One aggregator per fleet. Regression: two `fedgate aggregator` processes on one fleet both ran,
 * both reported every round full, and the gateways trained for each in turns (the only hint: "update
 * for a task this aggregator did not send"). A newcomer now refuses with exit status 78 and leaves
 * the running one's retained state alone; a stale retained state does not block it for ever.
 */
const missing = mosquittoMissing();
const brokers: [string, () => Promise<TestBroker>][] = [['aedes', startAedes]];
if (!missing) brokers.push(['mosquitto', () => startMosquitto()]);
else it.skip(`mosquitto: ${missing}`, () => undefined);
const noCli = existsSync(MAIN) ? undefined : 'dist/ is not built (npm run build)';

const spec = mlp(4, [3], 2);
type State = Record<string, unknown>;

const refusal = (fleet: string, session: number) =>
  `another aggregator is running fleet ${fleet} (session ${session}, started ${new Date(session).toISOString()}): stop it first, or use another --fleet`;

let fleets = 0;
const newFleet = (name: string) => new Topics('fedgate', `dup-${name}-${++fleets}-${Math.random().toString(36).slice(2, 6)}`);

/** Every message on aggregator/state, parsed (null: a cleared topic). */
async function watch(url: string, topics: Topics) {
  const c = await mqtt.connectAsync(url, { clientId: `watch-${topics.fleet}` });
  const seen: (State | null)[] = [];
  c.on('message', (_t, p) => seen.push(p.length ? JSON.parse(p.toString()) : null));
  await c.subscribeAsync(topics.aggregatorState, { qos: 1 });
  return {
    seen,
    of: (session: number) => seen.filter((s) => s?.session === session) as State[],
    /** Until the latest message has these values (a state published just before is still on its way). */
    latest: (want: State) => until(() => { const l = seen.at(-1); return !!l && Object.entries(want).every(([k, v]) => l[k] === v); }, 5000, `aggregator state ${JSON.stringify(want)}`),
    close: () => c.endAsync(),
  };
}

/** The retained aggregator/state, as a newcomer would read it. */
async function retained(url: string, topics: Topics): Promise<State | null | undefined> {
  const c = await mqtt.connectAsync(url, { clientId: `read-${topics.fleet}-${Math.random().toString(36).slice(2, 6)}` });
  try {
    const got = new Promise<State | null>((resolve) => c.on('message', (_t, p) => resolve(p.length ? JSON.parse(p.toString()) : null)));
    await c.subscribeAsync(topics.aggregatorState, { qos: 1 });
    return await Promise.race([got, sleep(5000).then(() => undefined)]);
  } finally {
    await c.endAsync();
  }
}

async function publishRetained(url: string, topics: Topics, state: State | null): Promise<void> {
  const c = await mqtt.connectAsync(url, { clientId: `pub-${topics.fleet}-${Math.random().toString(36).slice(2, 6)}` });
  await c.publishAsync(topics.aggregatorState, state === null ? '' : JSON.stringify(state), { qos: 1, retain: true });
  await c.endAsync();
}

/** A hand-driven node: live (heartbeats), answers every task with a zero update after `delayMs`. */
async function fakeNode(url: string, topics: Topics, id: string, delayMs = 150) {
  const c = await mqtt.connectAsync(url, { clientId: `${topics.fleet}-${id}` });
  const tasks: { taskId: string; at: number }[] = [];
  const r = new Reassembler();
  c.on('message', (_t, payload) => {
    const whole = r.push('agg', payload);
    if (!whole) return;
    const task = whole.meta as unknown as TaskMessage;
    tasks.push({ taskId: task.taskId, at: Date.now() });
    setTimeout(() => {
      const meta: UpdateMeta = { round: task.round, taskId: task.taskId, node: id, samples: 100, steps: task.steps, loss: 0.5, trainSeconds: 0.1, paramCount: task.paramCount, codec: 'none', stoppedEarly: false };
      for (const f of encodeFrames(FrameKind.Update, meta as unknown as Record<string, unknown>, encode(new Float32Array(task.paramCount), { codec: 'none' }), 64 * 1024)) {
        c.publishAsync(topics.nodeUpdate(id), f, { qos: 1 }).catch(() => undefined);
      }
    }, delayMs);
  });
  await c.subscribeAsync(topics.nodeTask(id), { qos: 1 });
  await c.publishAsync(topics.nodeState(id), JSON.stringify({ online: true, node: id, session: 1, samples: 100, ts: Date.now() }), { qos: 1, retain: true });
  const beat = setInterval(() => c.publishAsync(topics.nodeHeartbeat(id), JSON.stringify({ node: id, session: 1, ts: Date.now() }), { qos: 0 }).catch(() => undefined), 200);
  return { tasks, close: async () => { clearInterval(beat); await c.endAsync(); } };
}

/** An in-process aggregator with its own MQTT client id (two in one process would otherwise share `…-<pid>`) and its log lines. */
function aggregator(url: string, topics: Topics, name: string, over: Partial<AggregatorOptions> = {}) {
  const lines: { level: number; msg: string }[] = [];
  const agg = new Aggregator({
    url, topics, clientId: `agg-${topics.fleet}-${name}`, spec, initialParams: initParams(spec, 1), rounds: 1000, minClients: 1, waitForClientsSeconds: 60, seed: 1, graceSeconds: 1,
    strategy: new FedAvgStrategy({ clientsPerRound: 0, epochs: 1, batchSize: 10, lr: 0.1, codec: { codec: 'none' }, deadlineSeconds: 5, seed: 1 }),
    log: pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) }),
    ...over,
  });
  const rounds: RoundRecord[] = [];
  agg.on('round', (r: RoundRecord) => rounds.push(r));
  return { agg, lines, rounds, warnings: () => lines.filter((l) => l.level >= 40) };
}

/** An aggregator past its check, its full state (round, open) retained. */
async function running(url: string, topics: Topics, name: string, w: Awaited<ReturnType<typeof watch>>, over: Partial<AggregatorOptions> = {}) {
  const a = aggregator(url, topics, name, over);
  const run = a.agg.run();
  run.catch(() => undefined); // awaited by the test
  await until(() => w.of(a.agg.session).some((s) => typeof s.round === 'number' && s.online === true), 10_000, 'the aggregator running');
  return { ...a, run };
}

function refusedWith(err: unknown): { message: string; exitCode: number; isError: boolean } {
  return { message: (err as Error).message, exitCode: (err as AnotherAggregatorError).exitCode, isError: err instanceof AnotherAggregatorError };
}

describe.each(brokers)('one aggregator per fleet, over %s', (_name, startBroker) => {
  let broker: TestBroker;
  beforeAll(async () => { broker = await startBroker(); });
  afterAll(async () => { await broker?.close(); });

  it('a second aggregator on a running fleet refuses at once (exit code 78), sends no task, publishes no offline state; the first runs on', async () => {
    const topics = newFleet('second');
    const w = await watch(broker.url, topics);
    const node = await fakeNode(broker.url, topics, 'gw-1');
    const a = await running(broker.url, topics, 'a', w);
    try {
      await until(() => a.rounds.length >= 2, 10_000, 'two rounds');
      // A check window far longer than any machine's delay: refused well inside it means the
      // running one answered the newcomer's birth (no waiting the window out).
      const b = aggregator(broker.url, topics, 'b', { duplicateCheckSeconds: 60 });
      const t0 = Date.now();
      const err = await b.agg.run().then(() => undefined, (e: unknown) => e);
      const tookMs = Date.now() - t0;
      await b.agg.stop(); // as the job does on its way out: still nothing published
      expect(refusedWith(err)).toEqual({ message: refusal(topics.fleet, a.agg.session), exitCode: 78, isError: true });
      expect(tookMs).toBeLessThan(30_000);
      const roundsAtRefusal = a.rounds.length;
      await until(() => a.rounds.length >= roundsAtRefusal + 2, 10_000, 'two more rounds of the first aggregator');
      // The newcomer's only message, if any (a round state of the running one may come before it): its
      // birth, "starting" (no round or open: gateways ignore it). Never offline.
      expect(w.of(b.agg.session).map((s) => [s.online, s.starting, 'round' in s, 'open' in s])).toEqual(w.of(b.agg.session).length ? [[true, true, false, false]] : []);
      expect(b.warnings()).toEqual([]);
      // Every task the node got is the first aggregator's; it saw no foreign update and warned of nothing.
      expect(node.tasks.length).toBeGreaterThanOrEqual(4);
      expect(node.tasks.filter((t) => !t.taskId.startsWith(`${a.agg.session}-`))).toEqual([]);
      expect(a.warnings()).toEqual([]);
      // The retained state is the running aggregator's, online.
      expect(await retained(broker.url, topics)).toMatchObject({ online: true, role: 'aggregator', session: a.agg.session });
      expect((await retained(broker.url, topics))!.starting).toBeUndefined();
    } finally {
      await a.agg.stop();
      await node.close();
      await w.close();
    }
    expect((await a.run).rounds.length).toBeGreaterThanOrEqual(4);
    expect(await retained(broker.url, topics)).toMatchObject({ online: false, session: a.agg.session });
  }, 60_000);

  it('two aggregators started at once: the earlier one runs the job, the other refuses naming it; the retained state is the runner\'s', async () => {
    const topics = newFleet('twin');
    const w = await watch(broker.url, topics);
    const node = await fakeNode(broker.url, topics, 'gw-1');
    const a = aggregator(broker.url, topics, 'a', { rounds: 3 });
    await sleep(5); // two sessions apart (equal ones would be ordered by their random instance ids)
    const b = aggregator(broker.url, topics, 'b', { rounds: 3 });
    expect(b.agg.session).toBeGreaterThan(a.agg.session);
    try {
      const [ra, rb] = await Promise.allSettled([a.agg.run(), b.agg.run()]);
      expect(rb.status).toBe('rejected');
      expect(refusedWith((rb as PromiseRejectedResult).reason)).toEqual({ message: refusal(topics.fleet, a.agg.session), exitCode: 78, isError: true });
      expect(ra.status).toBe('fulfilled');
      expect((ra as PromiseFulfilledResult<{ rounds: RoundRecord[] }>).value.rounds.map((r) => [r.round, r.participants, r.selected])).toEqual([[1, 1, 1], [2, 1, 1], [3, 1, 1]]);
      expect(node.tasks.map((t) => t.taskId)).toEqual([1, 2, 3].map((r) => `${a.agg.session}-${r}-gw-1`));
      expect(w.of(b.agg.session).filter((s) => s.online === false || 'round' in s)).toEqual([]);
      expect(a.warnings()).toEqual([]);
      await sleep(300); // any answer still on its way
      await w.latest({ online: true, session: a.agg.session, round: 3, open: false });
      expect(await retained(broker.url, topics)).toMatchObject({ online: true, session: a.agg.session, round: 3, open: false });
    } finally {
      await a.agg.stop();
      await b.agg.stop();
      await node.close();
      await w.close();
    }
    expect(await retained(broker.url, topics)).toMatchObject({ online: false, session: a.agg.session });
  }, 60_000);

  // Regression: the default client id was fedgate-aggregator-<fleet>-<pid>, the same for two
  // containers whose aggregator is pid 1: they took each other's connection over and never met.
  it('two aggregators with the default client id (one process: one pid) still meet, and the second refuses', async () => {
    const topics = newFleet('defaultid');
    const w = await watch(broker.url, topics);
    const node = await fakeNode(broker.url, topics, 'gw-1');
    const a = await running(broker.url, topics, 'a', w, { clientId: undefined });
    try {
      const b = aggregator(broker.url, topics, 'b', { clientId: undefined });
      const err = await b.agg.run().then(() => undefined, (e: unknown) => e);
      await b.agg.stop();
      expect(refusedWith(err)).toEqual({ message: refusal(topics.fleet, a.agg.session), exitCode: 78, isError: true });
      expect(a.warnings()).toEqual([]);
    } finally {
      await a.agg.stop();
      await node.close();
      await w.close();
    }
  }, 30_000);

  it('a stale retained online state (its aggregator died while the broker was down: no last will) holds the first round back by the check (3 s), then the newcomer runs', async () => {
    const topics = newFleet('stale');
    const stale = { online: true, role: 'aggregator', session: 1_700_000_000_000, instance: 'gone', round: 7, open: true, ts: 1_700_000_100_000 };
    await publishRetained(broker.url, topics, stale);
    const node = await fakeNode(broker.url, topics, 'gw-1', 0);
    const a = aggregator(broker.url, topics, 'a', { rounds: 1 }); // the default check
    const w = await watch(broker.url, topics);
    try {
      const t0 = Date.now();
      const res = await a.agg.run();
      expect(res.rounds.map((r) => [r.round, r.participants])).toEqual([[1, 1]]);
      const waited = node.tasks[0].at - t0;
      expect(waited).toBeGreaterThanOrEqual(3000);
      expect(waited).toBeLessThan(15_000);
      expect(a.lines.map((l) => l.msg)).toContain('the retained state of another aggregator was not confirmed: taken for the history of one that is gone');
      expect(a.warnings()).toEqual([]);
      await w.latest({ online: true, session: a.agg.session, round: 1, open: false });
      expect(await retained(broker.url, topics)).toMatchObject({ online: true, session: a.agg.session, round: 1, open: false });
    } finally {
      await a.agg.stop();
      await node.close();
      await w.close();
    }
    expect(await retained(broker.url, topics)).toMatchObject({ online: false, session: a.agg.session, round: 1, open: false });
  }, 30_000);

  it('a newcomer stopped during its check, with another one\'s online state retained before it, publishes no offline state', async () => {
    const topics = newFleet('quiet');
    await publishRetained(broker.url, topics, { online: true, role: 'aggregator', session: 1_700_000_000_000, instance: 'slow', round: 2, open: true, ts: 1_700_000_100_000 });
    const w = await watch(broker.url, topics);
    const a = aggregator(broker.url, topics, 'a');
    try {
      const run = a.agg.run();
      await until(() => w.of(a.agg.session).length === 1, 5000, 'the newcomer\'s birth'); // it is in its check now
      await a.agg.stop();
      expect((await run).rounds).toEqual([]);
      await sleep(300);
      expect(w.of(a.agg.session).map((s) => [s.online, s.starting])).toEqual([[true, true]]);
      expect(a.warnings()).toEqual([]);
    } finally {
      await a.agg.stop();
      await w.close();
    }
  }, 30_000);

  it('a running aggregator puts its own state back, ts and all, over a newcomer\'s offline state, a cleared topic and a newer one\'s state', async () => {
    const topics = newFleet('answer');
    const w = await watch(broker.url, topics);
    const a = await running(broker.url, topics, 'a', w); // no node: it waits for one, its check long passed
    try {
      const mine = w.of(a.agg.session).at(-1)!;
      expect(mine).toEqual({ online: true, role: 'aggregator', session: a.agg.session, instance: expect.stringMatching(/^[0-9a-f]{12}$/), round: 0, open: false, ts: expect.any(Number) });
      const others: (State | null)[] = [
        { online: false, role: 'aggregator', session: a.agg.session + 1000, instance: 'newcomer', round: 0, open: false, ts: Date.now() }, // a newcomer's will
        null, // someone cleared the topic
        { online: true, role: 'aggregator', session: a.agg.session + 2000, instance: 'later', round: 0, open: false, ts: Date.now() }, // a later one, running
      ];
      for (const other of others) {
        const before = w.seen.length;
        await publishRetained(broker.url, topics, other);
        await until(() => w.seen.slice(before).some((s) => s?.session === a.agg.session), 5000, 'the answer');
        // The very state it had published: gateways take it for a replay and send no update twice.
        expect(await retained(broker.url, topics)).toEqual(mine);
        await sleep(300);
      }
      expect(a.warnings()).toEqual([]);
      expect(await Promise.race([a.run.then(() => 'ended', () => 'failed'), sleep(200).then(() => 'running')])).toBe('running');
    } finally {
      await a.agg.stop();
      await w.close();
    }
  }, 30_000);

  it('of two running aggregators (the broker kept them apart), the later one stops with the error and leaves the earlier one\'s state retained', async () => {
    const topics = newFleet('elder');
    const w = await watch(broker.url, topics);
    const a = await running(broker.url, topics, 'a', w);
    const elder = { online: true, role: 'aggregator', session: a.agg.session - 60_000, instance: 'elder', round: 2, open: true, ts: Date.now() };
    try {
      await publishRetained(broker.url, topics, elder);
      expect(refusedWith(await a.run.then(() => undefined, (e: unknown) => e))).toEqual({ message: refusal(topics.fleet, elder.session), exitCode: 78, isError: true });
      await a.agg.stop();
      await sleep(300);
      expect(await retained(broker.url, topics)).toEqual(elder);
      expect(w.of(a.agg.session).filter((s) => s.online === false)).toEqual([]);
    } finally {
      await a.agg.stop();
      await w.close();
    }
  }, 30_000);

  describe.skipIf(noCli !== undefined)('fedgate aggregator (the CLI)', () => {
    const cli = (args: string[]) => {
      const child = spawn(process.execPath, [MAIN, 'aggregator', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (d) => (stdout += d));
      child.stderr!.on('data', (d) => (stderr += d));
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      return { child, exited, out: () => ({ stdout, stderr }) };
    };

    it('next to a running aggregator: one line naming it, exit status 78, no report', async () => {
      const topics = newFleet('cli');
      const w = await watch(broker.url, topics);
      const a = await running(broker.url, topics, 'a', w);
      const dir = mkdtempSync(path.join(tmpdir(), 'fg-dup-cli-'));
      const b = cli(['--broker', broker.url, '--fleet', topics.fleet, '--min-clients', '1', '--rounds', '3', '--hidden', '16', '--model-out', '', '--report', path.join(dir, 'r.json')]);
      try {
        expect(await b.exited).toBe(78);
        expect(b.out()).toEqual({ stdout: '', stderr: `fedgate: ${refusal(topics.fleet, a.agg.session)}\n` });
        expect(readdirSync(dir)).toEqual([]);
        await sleep(300);
        expect(await retained(broker.url, topics)).toMatchObject({ online: true, session: a.agg.session });
        expect(w.seen.filter((s) => s !== null && s.session !== a.agg.session && (s.online === false || 'round' in s))).toEqual([]);
      } finally {
        b.child.kill('SIGKILL');
        await a.agg.stop();
        await w.close();
      }
    }, 60_000);

    // The reported case: both started at once; both ran, the gateways trained for each in turns.
    it('two started at once: one runs the job, the other exits 78 naming it; the gateway trains for one job only', async () => {
      const topics = newFleet('cli-twins');
      // Each task takes 1.5 s: the winner's job outlasts any start-up lag between the two processes.
      const node = await fakeNode(broker.url, topics, 'gw-1', 1500);
      const dir = mkdtempSync(path.join(tmpdir(), 'fg-dup-twins-'));
      const args = (n: number) => ['--broker', broker.url, '--fleet', topics.fleet, '--min-clients', '1', '--rounds', '2', '--epochs', '1', '--hidden', '16', '--strategy', 'fedavg', '--model-out', '', '--report', path.join(dir, `d${n}.json`)];
      const runs = [cli(args(1)), cli(args(2))];
      try {
        const codes = await Promise.all(runs.map((r) => r.exited));
        expect([...codes].sort()).toEqual([0, 78]);
        const winner = codes.indexOf(0);
        const loser = 1 - winner;
        const said = runs[loser].out().stderr;
        const session = Number(/\(session (\d+),/.exec(said)?.[1]);
        expect(said).toBe(`fedgate: ${refusal(topics.fleet, session)}\n`);
        expect(runs[loser].out().stdout).toBe('');
        expect(readdirSync(dir)).toEqual([`d${winner + 1}.json`]);
        const report = JSON.parse(readFileSync(path.join(dir, `d${winner + 1}.json`), 'utf8'));
        expect(report.rounds.map((r: RoundRecord) => [r.round, r.participants, r.selected])).toEqual([[1, 1, 1], [2, 1, 1]]);
        expect(runs[winner].out().stderr).toBe('');
        // The node got the winner's two tasks and nothing else; the winner's clean stop is retained.
        expect(node.tasks.map((t) => t.taskId)).toEqual([`${session}-1-gw-1`, `${session}-2-gw-1`]);
        expect(await retained(broker.url, topics)).toMatchObject({ online: false, session });
      } finally {
        for (const r of runs) r.child.kill('SIGKILL');
        await node.close();
      }
    }, 90_000);
  });
});
