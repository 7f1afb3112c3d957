import { spawnSync } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Option, type Command } from 'commander';
import { ROLES, type Role } from '../../config';

/** The package root: the nearest ancestor holding package.json (from agent/ and from dist/agent/). */
function packageRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${__dirname}`);
  }
}

export interface InstallServiceOptions {
  role: Role;
  /** Where unit files go; default /etc/systemd/system. */
  prefix?: string;
  /** Where the settings file goes; default /etc/fedgate. */
  configDir?: string;
  /** Where the built package is installed (holding dist/); default /opt/fedgate. */
  installDir?: string;
  /** The node binary the unit runs; default /usr/bin/node. */
  node?: string;
  /** Overwrite a different existing unit file (never the settings or the secrets file). */
  force?: boolean;
  /** Templates (the unit and the starter settings); default the package's deploy/. */
  deployDir?: string;
  /**
   * Write a Type=notify unit (readiness and watchdog through the native addon); default: whether
   * the addon is built in the install directory. Without it, Type=exec.
   */
  notify?: boolean;
}

export interface InstallServiceResult {
  unitFile: string;
  configFile: string;
  envFile: string;
  /** What happened to each file. */
  actions: Array<{ file: string; action: 'written' | 'unchanged' | 'kept' }>;
  warnings: string[];
  nextSteps: string[];
}

/** systemd would split or expand these in ExecStart=, so the paths must not hold them. */
function checkPath(what: string, p: string): string {
  if (!path.isAbsolute(p)) throw new Error(`${what} must be an absolute path, got "${p}"`);
  if (/[\s%$"'\\;]/.test(p)) throw new Error(`${what} "${p}" holds white space, quotes, "%", "$", ";" or "\\", which systemd unit lines would misread`);
  return path.normalize(p).replace(/\/+$/, '') || '/';
}

export const ADDON_IN_INSTALL = 'build/Release/fedgate_compress.node';

/** A Type=notify unit as Type=exec, for an install without the native addon (nobody would say READY=1). */
export function execUnit(unit: string, why: string): string {
  return unit.replace(/^(?:# [^\n]*\n)*Type=notify\n(?:NotifyAccess=\S+\n)?(?:WatchdogSec=\S+\n)?/m,
    `# Type=exec, not notify: ${why}, so nothing would tell systemd READY=1.\n# Build it (node native/build.js) and run install-service --force again for readiness and a watchdog.\nType=exec\n`);
}

/**
 * Why the install cannot send sd_notify, or undefined when it can: the addon is loaded by the Node
 * the unit will run (a stale, foreign or empty file must not give a unit that never starts).
 */
export function notifyProblem(installDir: string, node: string): string | undefined {
  const addon = path.join(installDir, ADDON_IN_INSTALL);
  if (!existsSync(addon)) return `${addon} is missing`;
  if (!existsSync(node)) return `${node} does not exist, so ${addon} could not be tried`;
  const probe = 'const m = { exports: {} }; process.dlopen(m, process.argv[1]); if (typeof m.exports.sdNotify !== "function") { console.error("it has no sdNotify (an older build)"); process.exit(3); }';
  const r = spawnSync(node, ['-e', probe, addon], { encoding: 'utf8', timeout: 20_000 });
  if (r.status === 0) return undefined;
  const lines = (r.stderr || r.error?.message || '').split('\n').map((l) => l.trim());
  const detail = lines.find((l) => /^[A-Za-z]*Error: |^it has no sdNotify/.test(l))?.replace(/^Error: /, '') ?? r.error?.message ?? `exit ${r.status}`;
  return `${addon} does not load in ${node}: ${detail}`;
}

/** The unit text for these paths: the template with its /usr/bin/node, /opt/fedgate and /etc/fedgate replaced. */
export function renderUnit(template: string, paths: { node: string; installDir: string; configDir: string }): string {
  return template
    .replace(/^ExecStart=\/usr\/bin\/node /m, `ExecStart=${paths.node} `)
    .replace(/\/opt\/fedgate\//g, `${paths.installDir}/`)
    .replace(/\/etc\/fedgate\//g, `${paths.configDir}/`);
}

function envTemplate(role: Role): string {
  return [
    `# Secrets and overrides for fedgate-${role}.service, read by systemd (as root) before it starts the`,
    '# service. Keep this file mode 0600. Any setting can be given here as FEDGATE_<SECTION>_<NAME>.',
    '#FEDGATE_BROKER_PASSWORD=',
    '',
  ].join('\n');
}

async function writeNew(file: string, text: string, mode: number): Promise<boolean> {
  try {
    await fs.writeFile(file, text, { flag: 'wx', mode });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

/**
 * Writes the systemd unit of a role and, where none exist yet, a starter settings file and a
 * secrets file. An existing settings or secrets file is never touched; an existing unit that
 * differs is only replaced with `force`.
 */
export async function installService(o: InstallServiceOptions): Promise<InstallServiceResult> {
  if (!ROLES.includes(o.role)) throw new Error(`unknown role "${o.role}": use agent or aggregator`);
  const prefix = checkPath('--prefix', o.prefix ?? '/etc/systemd/system');
  const configDir = checkPath('--config-dir', o.configDir ?? '/etc/fedgate');
  const installDir = checkPath('--install-dir', o.installDir ?? '/opt/fedgate');
  const node = checkPath('--node', o.node ?? '/usr/bin/node');
  const deployDir = o.deployDir ?? path.join(packageRoot(), 'deploy');
  const unitName = `fedgate-${o.role}.service`;

  const problem = o.notify === undefined ? notifyProblem(installDir, node) : o.notify ? undefined : `${path.join(installDir, ADDON_IN_INSTALL)} is not used`;
  const template = async (name: string) => fs.readFile(path.join(deployDir, name), 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
    throw new Error(`the template ${path.join(deployDir, name)} is missing: install deploy/ with the package (copy package.json, dist/, node_modules/, build/ and deploy/)`);
  });
  const rendered = renderUnit(await template(unitName), { node, installDir, configDir });
  const unit = problem ? execUnit(rendered, problem) : rendered;
  const starter = (await template(`${o.role}.yaml`)).replace(/\/etc\/fedgate\//g, `${configDir}/`);
  const unitFile = path.join(prefix, unitName);
  const configFile = path.join(configDir, `${o.role}.yaml`);
  const envFile = path.join(configDir, `${o.role}.env`);
  const actions: InstallServiceResult['actions'] = [];

  await fs.mkdir(prefix, { recursive: true });
  const existing = await fs.readFile(unitFile, 'utf8').catch(() => undefined);
  if (existing === unit) {
    actions.push({ file: unitFile, action: 'unchanged' });
  } else {
    if (existing !== undefined && !o.force) throw new Error(`${unitFile} exists and differs from the unit fedgate would write; add --force to replace it`);
    await fs.writeFile(unitFile, unit, { mode: 0o644 });
    await fs.chmod(unitFile, 0o644);
    actions.push({ file: unitFile, action: 'written' });
  }
  await fs.mkdir(configDir, { recursive: true, mode: 0o755 });
  actions.push({ file: configFile, action: (await writeNew(configFile, starter, 0o644)) ? 'written' : 'kept' });
  actions.push({ file: envFile, action: (await writeNew(envFile, envTemplate(o.role), 0o600)) ? 'written' : 'kept' });

  const warnings: string[] = [];
  const main = path.join(installDir, 'dist/agent/cli/main.js');
  if (!existsSync(main)) warnings.push(`${main} does not exist yet: install the built package there (npm ci && npm run build, then copy package.json, dist/, node_modules/, build/ and deploy/)`);
  if (problem) warnings.push(`${problem}: the unit is Type=exec, without readiness or watchdog (build the addon and run install-service --force again for Type=notify)`);
  if (!existsSync(node)) warnings.push(`${node} does not exist: pass --node with the path of Node 20 (\`command -v node\`)`);
  if (/^\/(home|root|run\/user)(\/|$)/.test(installDir) || /^\/(home|root)(\/|$)/.test(node)) {
    warnings.push('the unit runs with ProtectHome=yes and a dynamic user: install fedgate and node outside /home and /root (e.g. /opt/fedgate, /usr/bin/node)');
  }
  const unitBase = unitName.replace(/\.service$/, '');
  const nextSteps = [
    `fedgate config check ${configFile} --role ${o.role}`,
    ...(prefix === '/etc/systemd/system' ? [] : [`# ${prefix} is not /etc/systemd/system: link or copy ${unitFile} there first`]),
    'systemctl daemon-reload',
    `systemctl enable --now ${unitName}`,
    `systemctl status ${unitName}`,
    `journalctl -u ${unitBase} -f`,
  ];
  return { unitFile, configFile, envFile, actions, warnings, nextSteps };
}

export function addInstallServiceCommand(program: Command): Command {
  return program
    .command('install-service')
    .description('write the systemd unit of the agent or the aggregator, and a starter settings file if there is none')
    .addOption(new Option('--role <role>', 'agent or aggregator').choices([...ROLES]).makeOptionMandatory())
    .option('--prefix <dir>', 'where the unit file goes', '/etc/systemd/system')
    .option('--config-dir <dir>', 'where the settings (<role>.yaml) and secrets (<role>.env) files go', '/etc/fedgate')
    .option('--install-dir <dir>', 'where the built fedgate package is installed', '/opt/fedgate')
    .option('--node <path>', 'the Node.js binary the service runs', '/usr/bin/node')
    .option('--force', 'replace an existing unit file that differs (settings files are never replaced)')
    .action(async (o: { role: Role; prefix: string; configDir: string; installDir: string; node: string; force?: boolean }) => {
      const r = await installService(o);
      const out: string[] = r.actions.map((a) => `${a.action === 'kept' ? 'kept (exists)' : a.action} ${a.file}`);
      for (const w of r.warnings) out.push(`warning: ${w}`);
      out.push('next:', ...r.nextSteps.map((s) => `  ${s}`));
      process.stdout.write(out.join('\n') + '\n');
    });
}
