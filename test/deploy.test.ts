import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { installService, renderUnit } from '../agent/cli/commands/install-service';
import { loadConfigFile } from '../agent/config';

const repo = path.resolve(__dirname, '..');
const deploy = path.join(repo, 'deploy');
const tmp = mkdtempSync(path.join(tmpdir(), 'fedgate-deploy-'));
const ROLES = ['agent', 'aggregator'] as const;
const REQUIRE = process.env.FEDGATE_REQUIRE_TOOLS === '1';

/** The tool's path, or undefined (with a note saying what is skipped and why) unless FEDGATE_REQUIRE_TOOLS=1. */
function tool(name: string, debianPackage: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  const found = r.status === 0 ? r.stdout.trim() : undefined;
  if (!found && !REQUIRE) {
    console.warn(`test/deploy: skipping the ${name} checks: ${name} is not installed (Debian package ${debianPackage}); FEDGATE_REQUIRE_TOOLS=1 makes this a failure`);
  }
  return found;
}

const analyze = tool('systemd-analyze', 'systemd');
const compose = tool('docker-compose', 'docker-compose');
const skipAnalyze = !analyze && !REQUIRE;
const skipCompose = !compose && !REQUIRE;

const unitText = (role: string) => readFileSync(path.join(deploy, `fedgate-${role}.service`), 'utf8');
const directives = (text: string) => text.split('\n').filter((l) => /^[A-Za-z]+=/.test(l));

/**
 * `systemd-analyze verify` of a unit text. verify also checks that the ExecStart binary exists,
 * so the copy runs the Node running this test instead of /usr/bin/node. verify exits 0 on
 * warnings (a misspelt or ignored setting), so any line about the unit also counts as a failure.
 */
function verify(text: string, name: string): { status: number | null; problems: string[] } {
  expect(analyze, 'systemd-analyze (Debian package systemd) is required').toBeTruthy();
  const dir = mkdtempSync(path.join(tmp, 'verify-'));
  const file = path.join(dir, name);
  writeFileSync(file, text.replace(/^ExecStart=\S+ /m, `ExecStart=${process.execPath} `));
  const r = spawnSync(analyze!, ['verify', '--man=no', file], { encoding: 'utf8' });
  const base = name.replace(/\.service$/, '');
  const problems = `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => l.includes(base));
  return { status: r.status, problems };
}

describe('systemd units', () => {
  for (const role of ROLES) {
    const name = `fedgate-${role}.service`;

    it(`${name}: runs the ${role} with its settings file as a hardened dynamic user`, () => {
      const d = directives(unitText(role));
      expect(d).toContain(`ExecStart=/usr/bin/node /opt/fedgate/dist/agent/cli/main.js ${role} --config /etc/fedgate/${role}.yaml`);
      expect(d).toContain(`EnvironmentFile=-/etc/fedgate/${role}.env`);
      expect(d).toContain(`StateDirectory=fedgate/${role}`);
      for (const line of [
        'Type=notify', 'NotifyAccess=main', 'DynamicUser=yes', 'Restart=on-failure', 'RestartSec=5s', 'RestartPreventExitStatus=78', 'NoNewPrivileges=yes', 'CapabilityBoundingSet=',
        'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes', 'PrivateDevices=yes', 'ProtectKernelTunables=yes',
        'ProtectKernelModules=yes', 'ProtectKernelLogs=yes', 'ProtectControlGroups=yes', 'LockPersonality=yes',
        'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK', 'SystemCallFilter=@system-service', 'UMask=0077',
      ]) expect(d, line).toContain(line);
      // V8's JIT needs writable and executable memory.
      expect(d.filter((l) => l.startsWith('MemoryDenyWriteExecute='))).toEqual([]);
      // systeminformation reads /proc/stat and /proc/meminfo.
      expect(d.filter((l) => l.startsWith('ProcSubset='))).toEqual([]);
    });

    it.skipIf(skipAnalyze)(`${name}: passes systemd-analyze verify without a warning`, () => {
      expect(verify(unitText(role), name)).toEqual({ status: 0, problems: [] });
    });

    it.skipIf(skipAnalyze)(`${name}: systemd-analyze security rates it well protected`, () => {
      const file = path.join(mkdtempSync(path.join(tmp, 'security-')), name);
      writeFileSync(file, unitText(role).replace(/^ExecStart=\S+ /m, `ExecStart=${process.execPath} `));
      const r = spawnSync(analyze!, ['security', '--offline=yes', '--no-pager', file], { encoding: 'utf8' });
      const m = /Overall exposure level for \S+: (\d+(\.\d+)?)/.exec(r.stdout);
      expect(m, r.stdout + r.stderr).toBeTruthy();
      expect(Number(m![1])).toBeLessThanOrEqual(2);
    });
  }

  it.skipIf(skipAnalyze)('the verify check catches a setting systemd would ignore', () => {
    const broken = unitText('agent').replace('NoNewPrivileges=yes', 'NoNewPrivileges=maybe');
    const r = verify(broken, 'fedgate-agent.service');
    expect(r.status).toBe(0); // verify itself passes it ...
    expect(r.problems.join('\n')).toContain('Failed to parse boolean value'); // ... but says why it should not
  });
});

describe('fedgate install-service', () => {
  it('writes the unit with the given paths, a starter settings file and a private secrets file', async () => {
    const root = mkdtempSync(path.join(tmp, 'install-'));
    const prefix = path.join(root, 'systemd');
    const configDir = path.join(root, 'etc', 'fedgate');
    const r = await installService({ role: 'agent', prefix, configDir, installDir: '/opt/fedgate', notify: true });
    expect(r.actions).toEqual([
      { file: path.join(prefix, 'fedgate-agent.service'), action: 'written' },
      { file: path.join(configDir, 'agent.yaml'), action: 'written' },
      { file: path.join(configDir, 'agent.env'), action: 'written' },
    ]);
    const unit = readFileSync(r.unitFile, 'utf8');
    expect(unit).toBe(unitText('agent').split('/etc/fedgate/').join(`${configDir}/`));
    const d = directives(unit);
    expect(d.filter((l) => l.startsWith('ExecStart='))).toEqual([`ExecStart=/usr/bin/node /opt/fedgate/dist/agent/cli/main.js agent --config ${configDir}/agent.yaml`]);
    expect(d.filter((l) => l.startsWith('StateDirectory='))).toEqual(['StateDirectory=fedgate/agent']);
    expect(d.filter((l) => l.startsWith('EnvironmentFile='))).toEqual([`EnvironmentFile=-${configDir}/agent.env`]);
    // A configuration error a restart cannot fix (exit 78: e.g. two agents with one node id) is not restarted.
    expect(d.filter((l) => l.startsWith('Restart'))).toEqual(['Restart=on-failure', 'RestartSec=5s', 'RestartPreventExitStatus=78']);
    expect(unit).not.toMatch(/^MemoryDenyWriteExecute=/m);
    expect(statSync(r.unitFile).mode & 0o777).toBe(0o644);
    expect(statSync(r.envFile).mode & 0o777).toBe(0o600);
    expect(readFileSync(r.envFile, 'utf8')).toBe(
      '# Secrets and overrides for fedgate-agent.service, read by systemd (as root) before it starts the\n' +
        '# service. Keep this file mode 0600. Any setting can be given here as FEDGATE_<SECTION>_<NAME>.\n' +
        '#FEDGATE_BROKER_PASSWORD=\n',
    );
    // The starter settings are valid as they are.
    const cfg = await loadConfigFile(r.configFile, 'agent', { env: {} });
    expect(cfg.broker.url).toBe('mqtt://localhost:1883');
    expect(r.nextSteps).toEqual([
      `fedgate config check ${configDir}/agent.yaml --role agent`,
      `# ${prefix} is not /etc/systemd/system: link or copy ${prefix}/fedgate-agent.service there first`,
      'systemctl daemon-reload',
      'systemctl enable --now fedgate-agent.service',
      'systemctl status fedgate-agent.service',
      'journalctl -u fedgate-agent -f',
    ]);
    expect(r.warnings).toContain('/opt/fedgate/dist/agent/cli/main.js does not exist yet: install the built package there (npm ci && npm run build, then copy package.json, dist/, node_modules/, build/ and deploy/)');
    if (!skipAnalyze) expect(verify(unit, 'fedgate-agent.service')).toEqual({ status: 0, problems: [] });
  });

  // Regression: an install copied as the README said (without deploy/) failed with a raw
  // "ENOENT: no such file or directory, open '/opt/fedgate/deploy/fedgate-agent.service'".
  it('an install without its deploy/ templates is one clear error, and nothing is written', async () => {
    const root = mkdtempSync(path.join(tmp, 'install-nodeploy-'));
    const opts = { role: 'agent' as const, prefix: path.join(root, 'units'), configDir: path.join(root, 'etc'), installDir: path.join(root, 'opt'), node: process.execPath, deployDir: path.join(root, 'opt', 'deploy') };
    await expect(installService(opts)).rejects.toThrow(`the template ${path.join(root, 'opt', 'deploy', 'fedgate-agent.service')} is missing: install deploy/ with the package (copy package.json, dist/, node_modules/, build/ and deploy/)`);
    expect(existsSync(opts.prefix)).toBe(false);
    expect(existsSync(opts.configDir)).toBe(false);
  });

  it('writes Type=exec, with a warning, where the install has no native addon that loads; Type=notify where it has', async () => {
    const root = mkdtempSync(path.join(tmp, 'install-'));
    const installDir = path.join(root, 'opt');
    const addon = path.join(installDir, 'build/Release/fedgate_compress.node');
    const opts = { role: 'agent' as const, prefix: path.join(root, 'units'), configDir: path.join(root, 'etc'), installDir, node: process.execPath };
    const unitOf = async (force: boolean) => {
      const r = await installService({ ...opts, force });
      return { r, text: readFileSync(r.unitFile, 'utf8') };
    };
    const exec = (text: string) => {
      const d = directives(text);
      expect(d).toContain('Type=exec');
      expect(d).toContain('RestartPreventExitStatus=78');
      expect(d.filter((l) => /^(Type=notify|NotifyAccess=|WatchdogSec=)/.test(l))).toEqual([]);
      expect(text).not.toMatch(/^# Type=notify/m); // the notify explanation goes with it
      if (!skipAnalyze) expect(verify(text, 'fedgate-agent.service')).toEqual({ status: 0, problems: [] });
    };
    // No addon at all.
    const bare = await unitOf(false);
    exec(bare.text);
    expect(bare.r.warnings).toContain(`${addon} is missing: the unit is Type=exec, without readiness or watchdog (build the addon and run install-service --force again for Type=notify)`);
    // Regression: an empty (or foreign) file at the addon's path gave a Type=notify unit that would never start.
    mkdirSync(path.dirname(addon), { recursive: true });
    writeFileSync(addon, '');
    const empty = await unitOf(true);
    exec(empty.text);
    expect(empty.r.warnings).toContain(`${addon} does not load in ${process.execPath}: ${addon}: file too short: the unit is Type=exec, without readiness or watchdog (build the addon and run install-service --force again for Type=notify)`);
    // The real addon, loaded by the unit's Node.
    const built = path.join(__dirname, '..', 'build/Release/fedgate_compress.node');
    if (existsSync(built)) {
      copyFileSync(built, addon);
      const good = await unitOf(true);
      expect(directives(good.text)).toEqual(expect.arrayContaining(['Type=notify', 'NotifyAccess=main', 'WatchdogSec=60s']));
      expect(good.r.warnings.filter((w) => w.includes('Type=exec'))).toEqual([]);
    }
  });

  it('never overwrites settings; replaces a different unit only with --force', async () => {
    const root = mkdtempSync(path.join(tmp, 'install-'));
    const opts = { role: 'aggregator' as const, prefix: path.join(root, 'units'), configDir: path.join(root, 'etc'), installDir: '/srv/fedgate', node: process.execPath };
    const first = await installService(opts);
    expect(readFileSync(first.unitFile, 'utf8')).toMatch(new RegExp(`^ExecStart=${process.execPath.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} /srv/fedgate/dist/agent/cli/main.js aggregator --config ${opts.configDir}/aggregator.yaml$`, 'm'));
    // Regression: the starter pinned int8 for the whole fleet (no per-link choice) and named its
    // binary checkpoint checkpoint.json.
    const starter = await loadConfigFile(first.configFile, 'aggregator', { env: {} });
    expect([starter.compression.codec, starter.job.checkpoint]).toEqual(['auto', 'aggregator.ckpt']);
    writeFileSync(first.configFile, 'job:\n  rounds: 3\n');
    const again = await installService(opts);
    expect(again.actions.map((a) => a.action)).toEqual(['unchanged', 'kept', 'kept']);
    expect(readFileSync(first.configFile, 'utf8')).toBe('job:\n  rounds: 3\n');

    writeFileSync(first.unitFile, '# edited by hand\n');
    await expect(installService(opts)).rejects.toThrow(`${first.unitFile} exists and differs from the unit fedgate would write; add --force to replace it`);
    const forced = await installService({ ...opts, force: true });
    expect(forced.actions.map((a) => a.action)).toEqual(['written', 'kept', 'kept']);
    expect(readFileSync(first.configFile, 'utf8')).toBe('job:\n  rounds: 3\n');
    expect(readFileSync(first.unitFile, 'utf8')).toContain('StateDirectory=fedgate/aggregator\n');
  });

  it('refuses paths that a unit line would misread', async () => {
    const root = mkdtempSync(path.join(tmp, 'install-'));
    await expect(installService({ role: 'agent', prefix: root, configDir: path.join(root, 'my config') })).rejects.toThrow(`--config-dir "${root}/my config" holds white space`);
    await expect(installService({ role: 'agent', prefix: root, installDir: 'opt/fedgate' })).rejects.toThrow('--install-dir must be an absolute path, got "opt/fedgate"');
    expect(readdirSync(root)).toEqual([]);
  });

  it('renders only the node, install and config paths', () => {
    expect(renderUnit('ExecStart=/usr/bin/node /opt/fedgate/dist/x.js --config /etc/fedgate/a.yaml\nEnvironmentFile=-/etc/fedgate/a.env\n', { node: '/usr/local/bin/node', installDir: '/srv/fg', configDir: '/etc/fg' }))
      .toBe('ExecStart=/usr/local/bin/node /srv/fg/dist/x.js --config /etc/fg/a.yaml\nEnvironmentFile=-/etc/fg/a.env\n');
  });

  it('ships starter settings that pass validation', async () => {
    for (const role of ROLES) await loadConfigFile(path.join(deploy, `${role}.yaml`), role, { env: {} });
  });
});

describe('docker', () => {
  const dockerfile = readFileSync(path.join(deploy, 'Dockerfile'), 'utf8');
  const lines = dockerfile.split('\n').filter((l) => l && !l.startsWith('#'));

  it('builds in one stage and runs, without compiler or sources, as a non-root user in another', () => {
    expect(lines.filter((l) => l.startsWith('FROM '))).toEqual(['FROM node:20-bookworm-slim AS build', 'FROM node:20-bookworm-slim']);
    const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
    expect(dockerfile).toMatch(/apt-get install -y --no-install-recommends python3 make g\+\+/);
    expect(dockerfile).toMatch(/RUN npm ci --no-audit --no-fund \\\n && test -f build\/Release\/fedgate_compress\.node/);
    expect(dockerfile).toMatch(/RUN npm run build \\\n && npm prune --omit=dev/);
    expect(runtime).toMatch(/^USER node$/m);
    expect(runtime).toMatch(/^VOLUME \["\/var\/lib\/fedgate"\]$/m);
    expect(runtime).toMatch(/^ENTRYPOINT \["fedgate"\]$/m);
    expect(runtime).not.toMatch(/g\+\+|COPY agent|COPY native/);
  });

  it('copies only files that exist in the repository', () => {
    const sources = lines.filter((l) => l.startsWith('COPY ') && !l.includes('--from=')).flatMap((l) => l.split(/\s+/).slice(1, -1));
    for (const s of sources) expect(existsSync(path.join(repo, s)), s).toBe(true);
  });

  // The runtime stage's layout, put together without Docker from the COPY --from=build lines:
  // the CLI starts from it and finds the native addon.
  it.skipIf(!existsSync(path.join(repo, 'dist/agent/cli/main.js')))('runs the CLI from the runtime stage\'s layout', () => {
    const opt = mkdtempSync(path.join(tmp, 'opt-'));
    for (const l of lines.filter((x) => x.startsWith('COPY --from=build '))) {
      const [from, to] = l.split(/\s+/).slice(2);
      const src = path.join(repo, from.replace(/^\/src\//, ''));
      const dest = path.join(opt, to);
      if (from.endsWith('/node_modules')) {
        symlinkSync(src, dest.replace(/\/$/, ''));
      } else if (from.includes('*')) {
        mkdirSync(dest, { recursive: true });
        const dir = path.dirname(src);
        const re = new RegExp('^' + path.basename(src).replace('.', '\\.').replace('*', '.*') + '$');
        for (const f of existsSync(dir) ? readdirSync(dir).filter((f) => re.test(f)) : []) copyFileSync(path.join(dir, f), path.join(dest, f));
      } else {
        cpSync(src, dest.endsWith('/') || dest.endsWith('.') ? path.join(dest, path.basename(src)) : dest, { recursive: true });
      }
    }
    const help = spawnSync(process.execPath, [path.join(opt, 'dist/agent/cli/main.js'), '--help'], { encoding: 'utf8' });
    expect(help.status, help.stderr).toBe(0);
    for (const cmd of ['agent', 'aggregator', 'config', 'install-service']) expect(help.stdout).toMatch(new RegExp(`^  ${cmd}\\b`, 'm'));
    if (existsSync(path.join(repo, 'build/Release/fedgate_compress.node'))) {
      const b = spawnSync(process.execPath, ['-e', `process.stdout.write(require(${JSON.stringify(path.join(opt, 'dist/agent/compress'))}).backend)`], { encoding: 'utf8' });
      expect(b.stdout).toBe('native');
    }
  });

  it.skipIf(skipCompose)('docker-compose.yml: mosquitto with the project ACL, the aggregator and 4 gateways of different sizes, each with its shard and state volume', () => {
    expect(compose, 'docker-compose (Debian package docker-compose) is required').toBeTruthy();
    const r = spawnSync(compose!, ['-f', path.join(deploy, 'docker-compose.yml'), 'config'], { encoding: 'utf8', cwd: repo });
    expect(r.status, r.stderr).toBe(0);
    const cfg = YAML.parse(r.stdout);
    const services = Object.keys(cfg.services).sort();
    expect(services).toEqual(['agent-0', 'agent-1', 'agent-2', 'agent-3', 'aggregator', 'mosquitto']);
    expect(cfg.services.mosquitto.image).toBe('eclipse-mosquitto:2');
    const mounts = cfg.services.mosquitto.volumes.map((v: string | { source: string; target: string }) => (typeof v === 'string' ? v : `${v.source}:${v.target}`));
    expect(mounts.some((m: string) => m.startsWith(path.join(repo, 'broker-config/fedgate.acl') + ':/mosquitto/config/fedgate.acl'))).toBe(true);
    expect(mounts.some((m: string) => m.startsWith(path.join(deploy, 'mosquitto-compose.conf') + ':/mosquitto/config/mosquitto.conf'))).toBe(true);
    const agents = services.filter((s) => s.startsWith('agent-')).map((s) => ({ name: s, ...cfg.services[s] }));
    const arg = (cmd: string[], flag: string) => cmd[cmd.indexOf(flag) + 1];
    expect(agents.map((a) => arg(a.command, '--shard'))).toEqual(['0/4', '1/4', '2/4', '3/4']);
    expect(agents.map((a) => arg(a.command, '--node-id'))).toEqual(['gw-0', 'gw-1', 'gw-2', 'gw-3']);
    // The broker ACL keys on the user name: each gateway logs in as its node id.
    expect(agents.map((a) => arg(a.command, '--username'))).toEqual(['gw-0', 'gw-1', 'gw-2', 'gw-3']);
    expect(new Set(agents.map((a) => String(a.cpus))).size).toBe(4);
    expect(new Set(agents.map((a) => String(a.mem_limit))).size).toBe(4);
    const stateVolumes = agents.map((a) => a.volumes.map((v: string | { source: string }) => (typeof v === 'string' ? v.split(':')[0] : v.source))[0]);
    expect(stateVolumes).toEqual(['agent-0-state', 'agent-1-state', 'agent-2-state', 'agent-3-state']);
    expect(cfg.services.aggregator.build.dockerfile).toBe('deploy/Dockerfile');
  });
});
