import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { loadTls } from '../agent/transport';
import { mosquittoMissing } from './helpers/brokers';
import { MAIN, ROOT, startAgent, startLoggedMosquitto, type AgentProcess, type LoggedBroker } from './helpers/gateway';

/**
 * TLS to a real mosquitto with a private CA: the agent and the aggregator (flags and settings file)
 * train over mqtts://; a certificate that does not verify, or a missing or non-PEM CA file, is one
 * clear line and exit 1, not endless retries. Regressions: the aggregator had no TLS at all, the
 * agent ignored rejectUnauthorized, a bad certificate was retried for ever.
 */
const openssl = spawnSync('openssl', ['version']).status === 0;
const missing = mosquittoMissing() ?? (!openssl ? 'openssl is not installed (apt-get install -y openssl)' : undefined) ?? (existsSync(MAIN) ? undefined : 'dist/ is not built (npm run build)');
if (missing) it.skip(`TLS: ${missing}`, () => undefined);

function makeCerts(dir: string): void {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=fedgate test CA');
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'ext.cnf');
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other.key', '-out', 'other.crt', '-days', '2', '-subj', '/CN=another CA');
  writeFileSync(path.join(dir, 'not-pem.crt'), Buffer.from([0x30, 0x82, 0x01, 0x0a]));
}

function fedgate(args: string[], ms = 60_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe.skipIf(missing !== undefined)('TLS to mosquitto', { timeout: 90_000 }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fg-tls-'));
  let broker: LoggedBroker;
  let url: string;
  const agents: AgentProcess[] = [];
  const ca = path.join(dir, 'ca.crt');
  const agentArgs = (node: string, extra: string[]) => ['--broker', url, '--fleet', 'tls', '--node-id', node, '--state-dir', path.join(dir, `state-${node}`), '--max-samples', '300', '--max-cpu-load', '1', '--log-level', 'info', ...extra];

  beforeAll(async () => {
    makeCerts(dir);
    // mosquitto drops root before it opens the certificate files.
    if (process.getuid?.() === 0) {
      const uid = Number(execFileSync('id', ['-u', 'mosquitto']).toString());
      for (const f of [dir, ...readdirSync(dir).map((f) => path.join(dir, f))]) chownSync(f, uid, uid);
    }
    broker = await startLoggedMosquitto(`cafile ${ca}\ncertfile ${path.join(dir, 'server.crt')}\nkeyfile ${path.join(dir, 'server.key')}\n`);
    url = `mqtts://localhost:${broker.port}`;
  });
  afterAll(async () => {
    for (const a of agents) a.kill('SIGKILL');
    await broker?.stop();
  });

  it('an agent and the aggregator (flags, then a settings file) train over mqtts with the fleet\'s CA', async () => {
    const agent = startAgent(agentArgs('gw-t', ['--tls-ca', ca]));
    agents.push(agent);
    await agent.waitForLog('agent started');
    const flags = await fedgate(['aggregator', '--broker', url, '--tls-ca', ca, '--fleet', 'tls', '--rounds', '1', '--epochs', '1', '--hidden', '16', '--model-out', '']);
    expect(flags.code, flags.stderr).toBe(0);
    expect(flags.stdout).toMatch(/^round 1\/1  participants 1\/1 /);
    const settings = path.join(dir, 'aggregator.yaml');
    writeFileSync(settings, `stateDir: ${path.join(dir, 'agg-state')}\nbroker:\n  url: ${url}\n  tls:\n    ca: ${ca}\nfleet:\n  name: tls\nmodel:\n  hidden: [16]\njob:\n  rounds: 1\n  epochs: 1\n`);
    const file = await fedgate(['aggregator', '--config', settings]);
    expect(file.code, file.stderr).toBe(0);
    expect(file.stdout).toMatch(/^round 1\/1  participants 1\/1 /);
    expect(existsSync(path.join(dir, 'agg-state', 'fedgate-model.onnx'))).toBe(true); // relative: in the state directory
  });

  it('a broker certificate from another CA: one clear line, exit 1, no endless retries', async () => {
    for (const args of [['--tls-ca', path.join(dir, 'other.crt')], []]) {
      const agent = startAgent(agentArgs('gw-bad', args));
      agents.push(agent);
      const exit = await agent.exited;
      expect(exit.code).toBe(1);
      expect(agent.stderr().trim().split('\n').pop()).toMatch(/^fedgate: the broker's TLS certificate at mqtts:\/\/localhost:\d+ does not verify: .+ \(broker\.tls\.ca must name the CA that signed it; broker\.tls\.rejectUnauthorized: false skips the check\)$/);
    }
    const agg = await fedgate(['aggregator', '--broker', url, '--fleet', 'tls', '--rounds', '1', '--model-out', '']);
    expect(agg.code).toBe(1);
    expect(agg.stderr).toMatch(/^fedgate: the broker's TLS certificate at mqtts:\/\/localhost:\d+ does not verify: /m);
  });

  it('--no-tls-verify (rejectUnauthorized: false) connects without the CA', async () => {
    const agent = startAgent(agentArgs('gw-insecure', ['--no-tls-verify']));
    agents.push(agent);
    await agent.waitForLog('agent started');
    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
  });

  it('a CA file that is missing or not PEM is named with its setting', async () => {
    const absent = await fedgate(['agent', ...agentArgs('gw-x', ['--tls-ca', path.join(dir, 'absent.crt')])], 20_000);
    expect(absent.stderr).toBe(`fedgate: broker.tls.ca: cannot read ${path.join(dir, 'absent.crt')} (ENOENT)\n`);
    expect(absent.code).toBe(1);
    expect(() => loadTls({ ca: path.join(dir, 'not-pem.crt') })).toThrow(`broker.tls.ca: ${path.join(dir, 'not-pem.crt')} is not a PEM file (no "-----BEGIN" line)`);
  });
});
