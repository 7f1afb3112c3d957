import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const script = `require(${JSON.stringify(path.resolve(__dirname, '../dist/agent/log'))}).logger('transport', { node: 'gw-1' }).info({ password: 'hunter2', broker: { password: 'pw', url: 'mqtt://x' } }, 'connected')`;
const run = (env: Record<string, string>) => spawnSync(process.execPath, ['-e', script], { env: { ...process.env, FEDGATE_LOG_LEVEL: 'info', ...env }, encoding: 'utf8' });

describe('logs', () => {
  it('are JSON lines on stderr by default, one child logger per module, secrets redacted', () => {
    const r = run({ FEDGATE_LOG_FORMAT: '' });
    expect(r.stdout).toBe('');
    const line = JSON.parse(r.stderr.trim());
    expect(line).toMatchObject({ level: 30, module: 'transport', node: 'gw-1', msg: 'connected', password: '[redacted]', broker: { password: '[redacted]', url: 'mqtt://x' } });
    expect(r.stderr).not.toContain('hunter2');
  });

  it('are readable lines when asked for (as on a terminal), still redacted', () => {
    const r = run({ FEDGATE_LOG_FORMAT: 'pretty' });
    expect(r.stderr).toMatch(/INFO: connected/);
    expect(r.stderr).toContain('module: "transport"');
    expect(r.stderr).toContain('[redacted]');
    expect(r.stderr).not.toContain('hunter2');
  });
});
