import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { startEmbeddedBroker } from '../../agent/broker';

export interface TestBroker {
  name: 'aedes' | 'mosquitto';
  url: string;
  port: number;
  close(): Promise<void>;
  /** mosquitto only: the config file it runs with. */
  configFile?: string;
}

export const MOSQUITTO = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto'].find((p) => spawnSync(p, ['-h']).error === undefined);

/** Why the mosquitto suites are skipped, or undefined when they run. CI sets FEDGATE_REQUIRE_MOSQUITTO=1: there, missing is a failure. */
export function mosquittoMissing(): string | undefined {
  if (MOSQUITTO) return undefined;
  if (process.env.FEDGATE_REQUIRE_MOSQUITTO === '1') throw new Error('mosquitto is required (FEDGATE_REQUIRE_MOSQUITTO=1) but not installed: apt-get install -y mosquitto');
  return 'mosquitto is not installed (apt-get install -y mosquitto); skipping the mosquitto half';
}

/**
 * A free port below the kernel's ephemeral range (32768–60999 on Linux). A broker that a test stops
 * and restarts on the same port needs one: a port the kernel hands out for `listen(0)` can be given
 * to another test's broker while the first one is down.
 */
export async function freeStablePort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const srv = createServer();
    const ok = await new Promise<boolean>((resolve) => {
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (ok) {
      await new Promise<void>((r) => srv.close(() => r()));
      return port;
    }
  }
  throw new Error('no free port found between 20000 and 32000');
}

export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

async function waitForPort(port: number, child: ChildProcess, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`mosquitto exited with code ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`mosquitto did not open port ${port} within ${timeoutMs} ms`);
}

/** Debian's mosquitto on a free loopback port, with broker-config/mosquitto-test.conf (or `extraConfig` appended). */
export async function startMosquitto(extraConfig = '', port?: number): Promise<TestBroker> {
  if (!MOSQUITTO) throw new Error('mosquitto is not installed');
  const p = port ?? (await freePort());
  const dir = mkdtempSync(path.join(tmpdir(), 'fg-mosq-'));
  const template = readFileSync(path.resolve(__dirname, '../../broker-config/mosquitto-test.conf'), 'utf8');
  const configFile = path.join(dir, 'mosquitto.conf');
  writeFileSync(configFile, template.replace('@PORT@', String(p)) + extraConfig);
  const child = spawn(MOSQUITTO, ['-c', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  try {
    await waitForPort(p, child);
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${(err as Error).message}\n${stderr}`);
  }
  return {
    name: 'mosquitto',
    url: `mqtt://127.0.0.1:${p}`,
    port: p,
    configFile,
    close: () => new Promise<void>((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    }),
  };
}

export async function startAedes(): Promise<TestBroker> {
  const b = await startEmbeddedBroker();
  return { name: 'aedes', url: b.url, port: b.port, close: () => b.close() };
}
