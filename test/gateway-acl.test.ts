import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdtempSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import mqtt from 'mqtt';
import { mosquittoMissing } from './helpers/brokers';
import { MAIN, ROOT, run, startAgent, startLoggedMosquitto, type AgentProcess, type LoggedBroker } from './helpers/gateway';

/**
 * broker-config/fedgate.acl with a password file, in a real mosquitto: a gateway may publish only
 * below its own node/<id>/ (refused with reason code 135 on MQTT v5 elsewhere), and the whole
 * management flow (retained config, request/response over v5) still works under it.
 */
const missing = mosquittoMissing() ?? (existsSync(MAIN) ? undefined : 'dist/ is not built (npx tsc -p tsconfig.json)');
const suite = missing ? describe.skip : describe;
if (missing) it.skip(`gateway ACL: ${missing}`, () => undefined);

const USERS: Record<string, string> = { 'gw-1': 'pw-gw-1', 'gw-2': 'pw-gw-2', aggregator: 'pw-agg', operator: 'pw-op' };

suite('the fleet ACL in mosquitto', { timeout: 60_000 }, () => {
  let broker: LoggedBroker;
  let agent: AgentProcess | undefined;

  beforeAll(async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-gw-acl-'));
    const passwd = path.join(dir, 'fedgate.passwd');
    const acl = path.join(dir, 'fedgate.acl');
    copyFileSync(path.join(ROOT, 'broker-config/fedgate.acl'), acl);
    for (const [i, [user, pw]] of Object.entries(USERS).entries()) {
      execFileSync('mosquitto_passwd', [...(i === 0 ? ['-c'] : []), '-b', passwd, user, pw]);
    }
    // Started as root, mosquitto drops to user mosquitto before it opens the password and ACL files.
    if (process.getuid?.() === 0) {
      const uid = Number(execFileSync('id', ['-u', 'mosquitto']).toString());
      const gid = Number(execFileSync('id', ['-g', 'mosquitto']).toString());
      for (const f of [dir, passwd, acl]) chownSync(f, uid, gid);
    }
    chmodSync(passwd, 0o600);
    chmodSync(acl, 0o600);
    broker = await startLoggedMosquitto(`allow_anonymous false\npassword_file ${passwd}\nacl_file ${acl}\n`);
  });

  afterAll(async () => {
    agent?.kill('SIGKILL');
    await broker?.stop();
  });

  const login = (user: string) => ['-h', '127.0.0.1', '-p', String(broker.port), '-u', user, '-P', USERS[user]];

  it('gw-1 publishes to its own topics; its publish to gw-2\'s update topic is refused with 135 (v5)', async () => {
    const gw1 = await mqtt.connectAsync(broker.url, { clientId: 'gw-1', username: 'gw-1', password: USERS['gw-1'], protocolVersion: 5 });
    for (const leaf of ['update', 'state', 'heartbeat', 'profile', 'response/get_config', 'response/cli']) {
      const ack = await gw1.publishAsync(`fedgate/default/node/gw-1/${leaf}`, 'x', { qos: 1 });
      expect((ack as { reasonCode?: number } | undefined)?.reasonCode ?? 0).toBe(0);
    }
    for (const topic of ['fedgate/default/node/gw-2/update', 'fedgate/default/node/gw-2/response/get_config', 'fedgate/default/node/gw-1/task', 'fedgate/default/config', 'fedgate/default/node/gw-1/config', 'fedgate/default/aggregator/state']) {
      const err = await gw1.publishAsync(topic, 'x', { qos: 1 }).then(() => undefined, (e: Error & { code?: number }) => e);
      expect(err?.code, topic).toBe(135);
    }
    await gw1.endAsync();

    // The same with the mosquitto CLI: refused publishes are reported, allowed ones are not.
    const own = await run('mosquitto_pub', ['-V', '5', ...login('gw-1'), '-q', '1', '-t', 'fedgate/default/node/gw-1/update', '-m', 'x']);
    expect(own).toMatchObject({ code: 0, stderr: '' });
    const other = await run('mosquitto_pub', ['-V', '5', ...login('gw-1'), '-q', '1', '-t', 'fedgate/default/node/gw-2/update', '-m', 'x']);
    expect(other.stderr).toContain('Not authorized');
    // A wrong password: the CONNECT itself is refused (135 on v5, 5 on 3.1.1).
    const bad = await run('mosquitto_pub', ['-V', '5', '-h', '127.0.0.1', '-p', String(broker.port), '-u', 'gw-1', '-P', 'wrong', '-t', 'fedgate/default/node/gw-1/update', '-m', 'x']);
    expect(bad.code).toBe(135);
  });

  it('gw-1 cannot read gw-2\'s requests, tasks or configuration', async () => {
    const gw1 = await mqtt.connectAsync(broker.url, { clientId: 'gw-1-sub', username: 'gw-1', password: USERS['gw-1'], protocolVersion: 5 });
    const granted = await gw1.subscribeAsync(['fedgate/default/node/gw-2/request/#', 'fedgate/default/node/gw-2/task', 'fedgate/default/node/gw-2/config', 'fedgate/default/node/gw-1/request/#']);
    // mosquitto grants the subscription but delivers nothing the ACL forbids: check by publishing.
    const seen: string[] = [];
    gw1.on('message', (t) => seen.push(t));
    const agg = await mqtt.connectAsync(broker.url, { clientId: 'agg', username: 'aggregator', password: USERS.aggregator, protocolVersion: 5 });
    for (const t of ['fedgate/default/node/gw-2/request/status', 'fedgate/default/node/gw-2/task', 'fedgate/default/node/gw-2/config', 'fedgate/default/node/gw-1/request/status']) await agg.publishAsync(t, 'x', { qos: 1 });
    await new Promise((r) => setTimeout(r, 300));
    expect(granted).toHaveLength(4);
    expect(seen).toEqual(['fedgate/default/node/gw-1/request/status']);
    await Promise.all([gw1.endAsync(), agg.endAsync()]);
  });

  it('the agent logged in as gw-1: retained config and the request/response flow work under the ACL', async () => {
    const op = login('operator');
    const base = 'fedgate/default/node/gw-1';
    // Retained layers first, as an operator sets up a fleet before the gateways come.
    expect((await run('mosquitto_pub', [...op, '-t', 'fedgate/default/config', '-r', '-q', '1', '-m', '{"version":1,"config":{"training":{"minBatteryPercent":35}}}'])).code).toBe(0);
    expect((await run('mosquitto_pub', [...op, '-t', `${base}/config`, '-r', '-q', '1', '-m', '{"version":1,"config":{"logging":{"level":"debug"}}}'])).code).toBe(0);

    const stateDir = mkdtempSync(path.join(tmpdir(), 'fg-gw-acl-state-'));
    agent = startAgent(['--broker', broker.url, '--username', 'gw-1', '--node-id', 'gw-1', '--state-dir', stateDir, '--max-samples', '300', '--max-cpu-load', '1', '--protocol-version', '5', '--log-level', 'info'], { FEDGATE_MQTT_PASSWORD: USERS['gw-1'] });
    await agent.waitForLog('agent started');
    await agent.waitForLog('config applied', (l) => l.kind === 'node');

    const r = await run('mosquitto_rr', [...op, '-t', `${base}/request/get_config`, '-e', `${base}/response/cli`, '-m', '{"transaction":"acl-1"}', '-W', '10']);
    expect(r.code, r.stderr).toBe(0);
    const answer = JSON.parse(r.stdout);
    expect(answer).toMatchObject({ status: 'ok', transaction: 'acl-1', data: { versions: { fleet: 1, node: 1 } } });
    expect(answer.data.config.training.minBatteryPercent).toBe(35);
    expect(answer.data.config.logging.level).toBe('debug');
    expect(answer.data.config.broker.password).toBe('[redacted]');

    const set = await run('mosquitto_rr', [...op, '-t', `${base}/request/set_config`, '-e', `${base}/response/cli`, '-m', '{"transaction":"acl-2","data":{"training":{"maxTemperatureC":70}}}', '-W', '10']);
    expect(JSON.parse(set.stdout)).toMatchObject({ status: 'ok', transaction: 'acl-2', data: { changed: ['training.maxTemperatureC'], restartRequired: [] } });

    // Its birth state and heartbeat got through; nothing it published was refused.
    const state = await run('mosquitto_sub', [...op, '-t', `${base}/state`, '-C', '1', '-W', '10']);
    expect(JSON.parse(state.stdout)).toMatchObject({ online: true, node: 'gw-1' });
    const hb = await run('mosquitto_sub', [...op, '-t', `${base}/heartbeat`, '-C', '1', '-W', '10']);
    expect(JSON.parse(hb.stdout)).toMatchObject({ node: 'gw-1', busy: false });
    expect(agent.lines.filter((l) => l.level >= 40)).toEqual([]);

    agent.kill('SIGTERM');
    expect(await agent.exited).toEqual({ code: 0, signal: null });
    const off = await run('mosquitto_sub', [...op, '-t', `${base}/state`, '-C', '1', '-W', '10']);
    expect(JSON.parse(off.stdout)).toMatchObject({ online: false, node: 'gw-1', reason: 'shutdown' });
  });

  const gw1 = (stateDir: string, extra: string[] = []) => startAgent(['--broker', broker.url, '--username', 'gw-1', '--node-id', 'gw-1', '--state-dir', stateDir, '--max-samples', '100', '--max-cpu-load', '1', '--log-level', 'info', ...extra], { FEDGATE_MQTT_PASSWORD: USERS['gw-1'] });

  // Regression: the ACL let a node write its state but not read it back, so a second agent with its
  // id went unnoticed: the two took each other's session over, again and again.
  it('two agents with one node id under the ACL: the one started earlier stops with a clear error', async () => {
    const first = gw1(mkdtempSync(path.join(tmpdir(), 'fg-gw-acl-a-')));
    await first.waitForLog('agent started');
    const second = gw1(mkdtempSync(path.join(tmpdir(), 'fg-gw-acl-b-')));
    try {
      await second.waitForLog('agent started');
      expect((await first.exited).code).toBe(78); // EX_CONFIG: the unit does not restart it to evict the other
      expect(first.stderr()).toContain('fedgate: node id gw-1 is in use by another agent started later; give one of them another node id (node.id / --node-id); not restarting\n');
    } finally {
      first.kill('SIGKILL');
      second.kill('SIGTERM');
    }
    expect(await second.exited).toEqual({ code: 0, signal: null });
  });

  // Regression: on MQTT 3.1.1 the broker drops what the ACL refuses without a word; an agent logged
  // in under another node's name ran "fine" and was never seen by the aggregator.
  it('a node id that is not its user name: the agent says the broker refuses its publishes, and why', async () => {
    const wrong = startAgent(['--broker', broker.url, '--username', 'gw-1', '--node-id', 'gw-9', '--state-dir', mkdtempSync(path.join(tmpdir(), 'fg-gw-acl-w-')), '--max-samples', '100', '--max-cpu-load', '1', '--log-level', 'info'], { FEDGATE_MQTT_PASSWORD: USERS['gw-1'] });
    try {
      const line = await wrong.waitForLog("this node's state did not come back from the broker within 10 s: the broker seems to refuse its publishes (the project ACL lets user \"gw-1\" write only below node/gw-1/, and this node is \"gw-9\": use node.id gw-1, or log in as gw-9)", () => true, 20_000);
      expect(line.level).toBe(50);
    } finally {
      wrong.kill('SIGKILL');
    }
    // The right pairing says nothing of the kind.
    const right = gw1(mkdtempSync(path.join(tmpdir(), 'fg-gw-acl-r-')));
    try {
      await right.waitForLog('agent started');
      await new Promise((r) => setTimeout(r, 11_000));
      expect(right.lines.filter((l) => l.level >= 40)).toEqual([]);
    } finally {
      right.kill('SIGKILL');
    }
  });
});
