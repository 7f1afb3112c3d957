import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { mosquittoMissing } from './helpers/brokers';
import { MAIN, run, startAgent, startLoggedMosquitto, subscribeWith, type AgentProcess, type LoggedBroker } from './helpers/gateway';

/**
 * The management API of a real agent process against mosquitto, driven with exactly the commands
 * the README shows (mosquitto_pub, mosquitto_sub, mosquitto_rr), asserting on the exact JSON.
 */
const missing = mosquittoMissing() ?? (existsSync(MAIN) ? undefined : 'dist/ is not built (npx tsc -p tsconfig.json)');
const suite = missing ? describe.skip : describe;
if (missing) it.skip(`gateway management: ${missing}`, () => undefined);

const NODE = 'gw-t1';
const BASE = `fedgate/default/node/${NODE}`;
const PASSWORD = 's3cret-pw';

suite('gateway management over MQTT (mosquitto CLI against a real agent process)', { timeout: 30_000 }, () => {
  let broker: LoggedBroker;
  let agent: AgentProcess;
  let stateDir: string;
  let H: string[];

  const agentArgs = () => ['--broker', broker.url, '--username', NODE, '--node-id', NODE, '--state-dir', stateDir, '--max-samples', '300', '--max-cpu-load', '1', '--protocol-version', '5'];
  const launch = async () => {
    // The password comes from the environment, as the README advises; get_config must never show it.
    agent = startAgent(agentArgs(), { FEDGATE_MQTT_PASSWORD: PASSWORD });
    await agent.waitForLog('agent started');
  };

  /** mosquitto_rr: MQTT v5 request with a response topic; prints the answer that arrives there. */
  const rr = async (action: string, message: string, extra: string[] = []) => {
    const r = await run('mosquitto_rr', [...H, '-t', `${BASE}/request/${action}`, '-e', `${BASE}/response/cli`, '-m', message, '-W', '10', ...extra]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.endsWith('\n')).toBe(true);
    return JSON.parse(r.stdout);
  };
  /** mosquitto_sub on the action's response topic, then mosquitto_pub of the request (MQTT 3.1.1 tools). */
  const subPub = async (action: string, message: string, responseAction = action) => {
    const topic = `${BASE}/response/${responseAction}`;
    const answer = await subscribeWith(broker, topic, [...H, '-t', topic, '-C', '1', '-W', '10']);
    const pub = await run('mosquitto_pub', [...H, '-t', `${BASE}/request/${action}`, '-m', message]);
    expect(pub.code, pub.stderr).toBe(0);
    const r = await answer.result;
    expect(r.code, r.stderr + agent.stderr() + broker.log()).toBe(0);
    return { raw: r.stdout, json: JSON.parse(r.stdout) };
  };
  const pubRetained = async (topic: string, message: string) => {
    const r = await run('mosquitto_pub', [...H, '-t', topic, '-r', '-q', '1', '-m', message]);
    expect(r.code, r.stderr).toBe(0);
  };

  beforeAll(async () => {
    broker = await startLoggedMosquitto();
    H = ['-h', '127.0.0.1', '-p', String(broker.port)];
    stateDir = mkdtempSync(path.join(tmpdir(), 'fg-gw-mgmt-'));
    await launch();
  }, 60_000);

  afterAll(async () => {
    agent?.kill('SIGKILL');
    await broker?.stop();
  });

  it('get_config: the effective settings with the password redacted, and the transaction echoed', async () => {
    const { raw, json } = await subPub('get_config', '{"transaction":"t1"}');
    expect(raw).not.toContain(PASSWORD);
    expect(json).toEqual({
      status: 'ok',
      data: {
        config: {
          broker: { url: broker.url, username: NODE, password: '[redacted]', tls: { rejectUnauthorized: true }, maxPacketBytes: 131072, protocolVersion: 5 },
          fleet: { prefix: 'fedgate', name: 'default' },
          node: { id: NODE },
          data: { dataset: 'mnist', shard: '0/1', partition: 'iid', seed: 1, csv: { labelColumn: 'label', ownerColumn: 'owner' }, maxSamples: 300 },
          training: { threads: 1, maxCpuLoad: 1, minBatteryPercent: 20, maxTemperatureC: 80, paused: false },
          compression: {},
          logging: { level: 'info' },
          stateDir,
        },
        versions: { fleet: 0, node: 0 },
      },
      transaction: 't1',
    });
  });

  it('set_config (partial): live settings change at once; the answer says which need a restart', async () => {
    const { json } = await subPub('set_config', '{"transaction":"t2","data":{"logging":{"level":"debug"}}}');
    expect(json.status).toBe('ok');
    expect(json.transaction).toBe('t2');
    expect(json.data.changed).toEqual(['logging.level']);
    expect(json.data.restartRequired).toEqual([]);
    expect(json.data.config.logging).toEqual({ level: 'debug' });
    expect(json.data.config.broker.password).toBe('[redacted]');
    // The new level is in force: the agent now logs its requests at debug level.
    await agent.waitForLog('request answered', (l) => l.level === 20, 5000);

    // Connection settings are the device's own: over MQTT a wrong one would cut the node off for good.
    const url = await subPub('set_config', '{"transaction":"t3","data":{"broker":{"url":"mqtt://other:1883"}}}');
    expect(url.json).toEqual({ status: 'error', error: 'invalid configuration, nothing changed: broker.url: cannot be changed over MQTT (a wrong value would cut the node off); set it in the settings file, the environment or on the command line', transaction: 't3' });
    const fleet = await rr('set_config', JSON.stringify({ transaction: 't3b', data: { fleet: { name: 'other' } } }));
    expect(fleet).toMatchObject({ status: 'error', error: expect.stringContaining('fleet.name: cannot be changed over MQTT'), transaction: 't3b' });
    // A setting that needs a restart but cannot cut the node off is accepted and says so.
    const threads = await rr('set_config', JSON.stringify({ transaction: 't3c', data: { data: { maxSamples: 250 } } }));
    expect(threads).toMatchObject({ status: 'ok', data: { changed: ['data.maxSamples'], restartRequired: ['data.maxSamples'] }, transaction: 't3c' });
    const undo = await rr('set_config', JSON.stringify({ transaction: 't3d', data: { data: { maxSamples: 300 } } }));
    expect(undo).toMatchObject({ status: 'ok', transaction: 't3d' });
  });

  it('an invalid set_config is refused naming the setting; the previous value stays in force', async () => {
    const { json } = await subPub('set_config', '{"transaction":"t4","data":{"training":{"threads":0}}}');
    expect(json).toEqual({ status: 'error', error: 'invalid configuration, nothing changed: training.threads: must be >= 1', transaction: 't4' });
    const now = await rr('get_config', '{"transaction":"t4b"}');
    expect(now.data.config.training.threads).toBe(1);
    // Not a settings object at all.
    const bad = await rr('set_config', '{"transaction":"t4c","data":[1,2]}');
    expect(bad).toEqual({ status: 'error', error: 'set_config needs data: an object of settings to change, e.g. {"training": {"threads": 2}}', transaction: 't4c' });
    // Regression: 3000 levels deep answered "Maximum call stack size exceeded".
    const deep = `{"transaction":"t4d","data":{"training":${'{"a":'.repeat(3000)}1${'}'.repeat(3000)}}}`;
    const tooDeep = await rr('set_config', deep);
    expect(tooDeep).toEqual({ status: 'error', error: 'a configuration nested more than 32 levels deep is refused (no setting is deeper than 4)', transaction: 't4d' });
  });

  // Regression: an unknown action was answered on response/unknown, not on response/<action> as for every other request.
  it('an unknown action gets an error listing the actions on response/<action>; a malformed request an error too, and the agent answers the next one', async () => {
    // The answer on whichever response topic it comes: mosquitto_sub -v prints the topic before the message.
    const any = `${BASE}/response/+`;
    const answer = await subscribeWith(broker, any, [...H, '-t', any, '-v', '-C', '1', '-W', '10']);
    const pub = await run('mosquitto_pub', [...H, '-t', `${BASE}/request/nosuch`, '-m', '{"transaction":"x1"}']);
    expect(pub.code, pub.stderr).toBe(0);
    const r = await answer.result;
    expect(r.code, r.stderr + agent.stderr()).toBe(0);
    expect(r.stdout).toBe(`${BASE}/response/nosuch {"status":"error","error":"unknown action \\"nosuch\\"; actions: get_config, set_config, status, profile, pause, resume, leave","transaction":"x1"}\n`);
    const unknown = await subPub('frobnicate', '{"transaction":"t5"}');
    expect(unknown.json).toEqual({ status: 'error', error: 'unknown action "frobnicate"; actions: get_config, set_config, status, profile, pause, resume, leave', transaction: 't5' });

    const malformed = await subPub('get_config', '{"transaction": "t6", oops');
    expect(Object.keys(malformed.json).sort()).toEqual(['error', 'status']);
    expect(malformed.json.status).toBe('error');
    expect(malformed.json.error).toMatch(/^request is not valid JSON: /);
    const notObject = await subPub('status', '[1,2,3]');
    expect(notObject.json).toEqual({ status: 'error', error: 'a request must be a JSON object {transaction, data}' });

    // Still alive and answering; a numeric transaction comes back as a number.
    const next = await subPub('status', '{"transaction":42}');
    expect(next.json.status).toBe('ok');
    expect(next.json.transaction).toBe(42);
    expect(next.json.data).toMatchObject({ node: NODE, connected: true, samples: 300, busy: false, training: { tasksDone: 0, pendingUpdates: 0, paused: false } });
  });

  it('MQTT v5: the answer also goes to the request\'s response topic, with its correlation data', async () => {
    // mosquitto_rr sets the response topic (-e); correlation data it sends only when asked (-D).
    const watch = await subscribeWith(broker, `${BASE}/response/cli`, ['-V', '5', ...H, '-t', `${BASE}/response/cli`, '-C', '1', '-W', '10', '-F', '%D %p']);
    const answer = await rr('status', '{"transaction":"t7"}', ['-D', 'publish', 'correlation-data', 'req-0042']);
    expect(answer).toMatchObject({ status: 'ok', transaction: 't7' });
    const seen = await watch.result;
    expect(seen.code).toBe(0);
    const space = seen.stdout.indexOf(' ');
    expect(seen.stdout.slice(0, space)).toBe('req-0042');
    expect(JSON.parse(seen.stdout.slice(space + 1))).toEqual(answer);
  });

  it('retained config: versions only go up, the same version twice does nothing, the node layer overrides the fleet layer', async () => {
    let from = agent.lines.length;
    await pubRetained(`${BASE}/config`, '{"version":2,"config":{"training":{"maxTemperatureC":75}}}');
    await agent.waitForLog('config applied', (l) => l.kind === 'node' && l.version === 2, 10_000, from);
    let cfg = await rr('get_config', '{}');
    expect(cfg.data.config.training.maxTemperatureC).toBe(75);
    expect(cfg.data.versions).toEqual({ fleet: 0, node: 2 });

    from = agent.lines.length;
    await pubRetained(`${BASE}/config`, '{"version":1,"config":{"training":{"maxTemperatureC":60}}}');
    await agent.waitForLog('older config ignored', (l) => l.version === 1 && l.applied === 2, 10_000, from);
    cfg = await rr('get_config', '{}');
    expect(cfg.data.config.training.maxTemperatureC).toBe(75);

    from = agent.lines.length;
    await pubRetained(`${BASE}/config`, '{"version":2,"config":{"training":{"maxTemperatureC":75}}}');
    await agent.waitForLog('config version already applied', (l) => l.version === 2, 10_000, from);
    expect(agent.lines.slice(from).filter((l) => l.msg === 'config applied')).toEqual([]);

    from = agent.lines.length;
    await pubRetained('fedgate/default/config', '{"version":5,"config":{"training":{"maxTemperatureC":70,"minBatteryPercent":30}}}');
    const applied = await agent.waitForLog('config applied', (l) => l.kind === 'fleet', 10_000, from);
    // The fleet's temperature is overridden by the node's 75: only the battery threshold changed.
    expect(applied.changed).toEqual(['training.minBatteryPercent']);
    cfg = await rr('get_config', '{}');
    expect(cfg.data.config.training).toEqual({ threads: 1, maxCpuLoad: 1, minBatteryPercent: 30, maxTemperatureC: 75, paused: false });
    expect(cfg.data.versions).toEqual({ fleet: 5, node: 2 });

    // An invalid retained layer is refused and changes nothing.
    from = agent.lines.length;
    await pubRetained(`${BASE}/config`, '{"version":3,"config":{"training":{"maxTemperatureC":-5}}}');
    const refused = await agent.waitForLog('config refused; previous settings stay in force', () => true, 10_000, from);
    expect(refused.err).toBe('invalid configuration, nothing changed: training.maxTemperatureC: must be >= 0');
    cfg = await rr('get_config', '{}');
    expect(cfg.data.versions).toEqual({ fleet: 5, node: 2 });
    expect(cfg.data.config.training.maxTemperatureC).toBe(75);

    // Clearing the retained topic (README: mosquitto_pub -r -n) leaves the applied layer in force, and says so.
    from = agent.lines.length;
    await run('mosquitto_pub', [...H, '-t', `${BASE}/config`, '-r', '-n']);
    await agent.waitForLog('retained node config cleared; the layer in force (version 2) stays: publish version 3 with "config": {} to drop it', () => true, 10_000, from);
    cfg = await rr('get_config', '{}');
    expect(cfg.data.versions).toEqual({ fleet: 5, node: 2 });
    expect(cfg.data.config.training.maxTemperatureC).toBe(75);
    // The retained layer back as it was, for the tests below (the same version: nothing changes).
    from = agent.lines.length;
    await pubRetained(`${BASE}/config`, '{"version":2,"config":{"training":{"maxTemperatureC":75}}}');
    await agent.waitForLog('config version already applied', (l) => l.version === 2, 10_000, from);
  });

  it('a version beyond 2^53 - 1 is refused with a clear error; the fleet and node layers, set_config and the state file stay as they were', async () => {
    const before = readFileSync(path.join(stateDir, 'applied-config.json'), 'utf8');
    let from = agent.lines.length;
    await pubRetained('fedgate/default/config', '{"version": 1e308, "config": {"logging": {"level": "error"}}}');
    const fleet = await agent.waitForLog('fleet config refused', () => true, 10_000, from);
    expect(fleet.err).toBe('fleet config: version must be a whole number from 1 to 9007199254740991 (2^53 - 1), got 1e+308');
    // 2^53 + 1 parses as 2^53: one past the largest version a JSON number holds exactly.
    from = agent.lines.length;
    await pubRetained(`${BASE}/config`, '{"version": 9007199254740993, "config": {"training": {"maxTemperatureC": 70}}}');
    const node = await agent.waitForLog('node config refused', () => true, 10_000, from);
    expect(node.err).toBe('node config: version must be a whole number from 1 to 9007199254740991 (2^53 - 1), got 9007199254740992');
    let cfg = await rr('get_config', '{}');
    expect(cfg.data.versions).toEqual({ fleet: 5, node: 2 });
    expect(cfg.data.config.logging.level).toBe('debug');
    expect(cfg.data.config.training.maxTemperatureC).toBe(75);
    expect(readFileSync(path.join(stateDir, 'applied-config.json'), 'utf8')).toBe(before);

    // Still configurable by request (this is what the tester saw refused).
    expect(await rr('set_config', '{"transaction":"s","data":{"compression":{"k":0.5}}}')).toEqual({ status: 'ok', data: { changed: ['compression.k'], restartRequired: [], config: expect.objectContaining({ compression: { k: 0.5 } }) }, transaction: 's' });
    expect(await rr('set_config', '{"transaction":"s2","data":{"compression":{"k":null}}}')).toMatchObject({ status: 'ok', data: { changed: ['compression.k'] }, transaction: 's2' });
    // Back to what the broker held before (both already applied: nothing changes).
    await pubRetained('fedgate/default/config', '{"version":5,"config":{"training":{"maxTemperatureC":70,"minBatteryPercent":30}}}');
    await pubRetained(`${BASE}/config`, '{"version":2,"config":{"training":{"maxTemperatureC":75}}}');
    cfg = await rr('get_config', '{}');
    expect(cfg.data.versions).toEqual({ fleet: 5, node: 2 });
  });

  it('a retained node layer is validated on its own: one that a set_config value hides is refused, not stored', async () => {
    expect(await rr('set_config', '{"transaction":"h1","data":{"training":{"threads":2}}}')).toMatchObject({ status: 'ok', data: { changed: ['training.threads'], restartRequired: ['training.threads'] }, transaction: 'h1' });
    const from = agent.lines.length;
    await pubRetained(`${BASE}/config`, '{"version": 4, "config": {"training": {"threads": 0}}}');
    const refused = await agent.waitForLog('config refused; previous settings stay in force', () => true, 10_000, from);
    expect(refused).toMatchObject({ kind: 'node', version: 4, err: 'invalid configuration, nothing changed: training.threads: must be >= 1' });
    const cfg = await rr('get_config', '{}');
    expect(cfg.data.versions).toEqual({ fleet: 5, node: 2 });
    expect(cfg.data.config.training).toEqual({ threads: 2, maxCpuLoad: 1, minBatteryPercent: 30, maxTemperatureC: 75, paused: false });
    const stored = JSON.parse(readFileSync(path.join(stateDir, 'applied-config.json'), 'utf8'));
    expect(stored.config.node).toEqual({ version: 2, config: { training: { maxTemperatureC: 75 } } });
    expect(stored.sources).toEqual({ fleet: 5, node: 2 });
    // The set_config value removed again (null: back to the process's own); the retained v4 stays refused.
    expect(await rr('set_config', '{"transaction":"h2","data":{"training":{"threads":null}}}')).toMatchObject({ status: 'ok', data: { changed: ['training.threads'] }, transaction: 'h2' });
    await pubRetained(`${BASE}/config`, '{"version":2,"config":{"training":{"maxTemperatureC":75}}}');
  });

  it('SIGTERM, then a restart: the applied config is back from the state directory; a replayed older config is still ignored', async () => {
    agent.kill('SIGTERM');
    expect(await agent.exited).toEqual({ code: 0, signal: null });
    const state = await run('mosquitto_sub', [...H, '-t', `${BASE}/state`, '-C', '1', '-W', '10']);
    expect(JSON.parse(state.stdout)).toMatchObject({ online: false, node: NODE, reason: 'shutdown' });

    // While it is down: the fleet layer disappears from the broker, the node topic holds an older version.
    await run('mosquitto_pub', [...H, '-t', 'fedgate/default/config', '-r', '-n']);
    await pubRetained(`${BASE}/config`, '{"version":1,"config":{"training":{"maxTemperatureC":60}}}');

    await launch();
    await agent.waitForLog('older config ignored', (l) => l.kind === 'node' && l.version === 1 && l.applied === 2, 10_000);
    const cfg = await rr('get_config', '{"transaction":"after-restart"}');
    expect(cfg.transaction).toBe('after-restart');
    expect(cfg.data.versions).toEqual({ fleet: 5, node: 2 });
    expect(cfg.data.config.training).toEqual({ threads: 1, maxCpuLoad: 1, minBatteryPercent: 30, maxTemperatureC: 75, paused: false });
    expect(cfg.data.config.logging).toEqual({ level: 'debug' });
    expect(agent.lines.filter((l) => l.msg === 'config applied')).toEqual([]);
  }, 60_000);

  it('pause and resume: the heartbeat\'s busy flag flips and the status reports paused', async () => {
    const hbTopic = `${BASE}/heartbeat`;
    let hb = await subscribeWith(broker, hbTopic, [...H, '-t', hbTopic, '-C', '1', '-W', '10']);
    // Any heartbeat first, then the one the pause sends at once.
    await hb.result;
    hb = await subscribeWith(broker, hbTopic, [...H, '-t', hbTopic, '-C', '1', '-W', '10']);
    const paused = await rr('pause', '{"transaction":"p1"}');
    expect(paused).toEqual({ status: 'ok', data: { paused: true, changed: ['training.paused'] }, transaction: 'p1' });
    expect(JSON.parse((await hb.result).stdout)).toMatchObject({ node: NODE, busy: true });
    const status = await rr('status', '{}');
    expect(status.data).toMatchObject({ busy: true, training: { paused: true, dutyCycle: 0 } });
    // Pausing again changes nothing.
    expect(await rr('pause', '{"transaction":"p2"}')).toEqual({ status: 'ok', data: { paused: true, changed: [] }, transaction: 'p2' });

    hb = await subscribeWith(broker, hbTopic, [...H, '-t', hbTopic, '-C', '1', '-W', '10']);
    expect(await rr('resume', '{"transaction":"r1"}')).toEqual({ status: 'ok', data: { paused: false, changed: ['training.paused'] }, transaction: 'r1' });
    expect(JSON.parse((await hb.result).stdout)).toMatchObject({ node: NODE, busy: false });
    expect((await rr('status', '{}')).data).toMatchObject({ busy: false, training: { paused: false } });
  });

  it('leave: answered, the process exits 0 and its retained state is cleared (zero-length retained)', async () => {
    const stateTopic = `${BASE}/state`;
    // -F '%r %l': retain flag and length; the clear reaches a live subscriber as a zero-length message.
    const watch = await subscribeWith(broker, stateTopic, [...H, '-t', stateTopic, '-F', '%r %l', '-C', '2', '-W', '10']);
    const answer = await subPub('leave', '{"transaction":"bye"}');
    expect(answer.json).toEqual({ status: 'ok', data: { leaving: true }, transaction: 'bye' });
    expect(await agent.exited).toEqual({ code: 0, signal: null });
    const seen = await watch.result;
    expect(seen.stdout.trim().split('\n')[1]).toBe('0 0');
    // Nothing retained any more: a new subscriber waits in vain (mosquitto_sub -W exits 27 on its timeout).
    const after = await run('mosquitto_sub', [...H, '-t', stateTopic, '-t', `${BASE}/profile`, '-C', '1', '-W', '2']);
    expect(after.stdout).toBe('');
    expect(after.code).toBe(27);
  });
});

suite('gateway management: a state directory holding versions an older build could store', { timeout: 30_000 }, () => {
  let broker: LoggedBroker;
  let agent: AgentProcess | undefined;
  let H: string[];
  const node = 'gw-t2';
  const base = `fedgate/default/node/${node}`;
  const rr = async (action: string, message: string) => {
    const r = await run('mosquitto_rr', [...H, '-t', `${base}/request/${action}`, '-e', `${base}/response/cli`, '-m', message, '-W', '10']);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout);
  };
  const launchWith = async (applied: string) => {
    const stateDir = mkdtempSync(path.join(tmpdir(), 'fg-gw-mgmt-old-'));
    writeFileSync(path.join(stateDir, 'applied-config.json'), applied, { mode: 0o600 });
    agent = startAgent(['--broker', broker.url, '--node-id', node, '--state-dir', stateDir, '--max-samples', '300', '--max-cpu-load', '1', '--protocol-version', '5', '--log-level', 'info']);
    await agent.waitForLog('agent started');
    return stateDir;
  };
  const stopAgent = async () => {
    agent?.kill('SIGTERM');
    await agent?.exited;
    agent = undefined;
  };

  beforeAll(async () => {
    broker = await startLoggedMosquitto();
    H = ['-h', '127.0.0.1', '-p', String(broker.port)];
  }, 60_000);

  afterAll(async () => {
    agent?.kill('SIGKILL');
    await broker?.stop();
  });

  it('a state file whose version is 1e+308 is moved aside with a logged error; the agent starts and takes configuration', async () => {
    const stateDir = await launchWith('{"version": 1e+308, "sources": {"fleet": 1e+308, "node": 0}, "appliedAt": "2025-01-01T00:00:00.000Z", "config": {"fleet": {"version": 1e+308, "config": {"logging": {"level": "error"}}}}}\n');
    const corrupt = agent!.lines.find((l) => l.msg === 'stored configuration is corrupt; starting without the layers applied over MQTT');
    expect(corrupt?.err).toMatch(/^state file .*applied-config\.json is corrupt \(version must be a whole number from 0 to 9007199254740991 \(2\^53 - 1\), got 1e\+308\); it was moved aside to .*applied-config\.json\.corrupt-\S+ and was not used$/);
    expect(await rr('set_config', '{"transaction":"a","data":{"training":{"maxTemperatureC":70}}}')).toMatchObject({ status: 'ok', data: { changed: ['training.maxTemperatureC'] }, transaction: 'a' });
    const from = agent!.lines.length;
    await run('mosquitto_pub', [...H, '-t', `${base}/config`, '-r', '-q', '1', '-m', '{"version": 9007199254740991, "config": {"training": {"minBatteryPercent": 25}}}']);
    await agent!.waitForLog('config applied', (l) => l.kind === 'node' && l.version === 9007199254740991, 10_000, from);
    const cfg = await rr('get_config', '{}');
    expect(cfg.data.versions).toEqual({ fleet: 0, node: 9007199254740991 });
    expect(cfg.data.config.training).toMatchObject({ maxTemperatureC: 70, minBatteryPercent: 25 });
    expect(JSON.parse(readFileSync(path.join(stateDir, 'applied-config.json'), 'utf8'))).toMatchObject({ version: 9007199254740991, sources: { fleet: 0, node: 9007199254740991 } });
    await stopAgent();
    await run('mosquitto_pub', [...H, '-t', `${base}/config`, '-r', '-n']);
  });

  it('stored layers with a version beyond 2^53 - 1, or invalid on their own, are dropped with a logged error; the rest stay in force', async () => {
    // node: 2^53 + 1 (stored by a build that did not check); fleet: threads 0, hidden by a set_config of 2 (stored by a build that only checked the stack).
    const stateDir = await launchWith(JSON.stringify({
      version: 7,
      sources: { fleet: 3, node: 7 },
      appliedAt: '2025-01-01T00:00:00.000Z',
      config: {
        fleet: { version: 3, config: { training: { threads: 0 } } },
        node: { version: 7, config: { training: { minBatteryPercent: 40 } } },
        local: { training: { threads: 2 } },
      },
    }).replace('"version":7,"config"', '"version":9007199254740993,"config"'));
    const dropped = agent!.lines.filter((l) => l.msg === 'stored configuration layers are invalid now; ignoring those');
    expect(dropped.length).toBeGreaterThan(0);
    expect(dropped[dropped.length - 1].issues).toEqual([
      'stored node config: version must be a whole number from 1 to 9007199254740991 (2^53 - 1), got 9007199254740992',
      'stored fleet config: training.threads: must be >= 1',
    ]);
    let cfg = await rr('get_config', '{}');
    expect(cfg.data.versions).toEqual({ fleet: 0, node: 0 });
    expect(cfg.data.config.training).toEqual({ threads: 2, maxCpuLoad: 1, minBatteryPercent: 20, maxTemperatureC: 80, paused: false });
    // New layers are accepted; the state file's version does not go below the 7 stored.
    const from = agent!.lines.length;
    await run('mosquitto_pub', [...H, '-t', 'fedgate/default/config', '-r', '-q', '1', '-m', '{"version": 1, "config": {"training": {"minBatteryPercent": 35}}}']);
    await agent!.waitForLog('config applied', (l) => l.kind === 'fleet' && l.version === 1, 10_000, from);
    cfg = await rr('get_config', '{}');
    expect(cfg.data.versions).toEqual({ fleet: 1, node: 0 });
    expect(cfg.data.config.training.minBatteryPercent).toBe(35);
    const stored = JSON.parse(readFileSync(path.join(stateDir, 'applied-config.json'), 'utf8'));
    expect(stored).toMatchObject({ version: 7, sources: { fleet: 1, node: 0 }, config: { fleet: { version: 1, config: { training: { minBatteryPercent: 35 } } }, local: { training: { threads: 2 } } } });
    expect(stored.config.node).toBeUndefined();
    await stopAgent();
  });
});
