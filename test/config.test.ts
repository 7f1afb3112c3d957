import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  ConfigError,
  ROLES,
  defaultConfig,
  diffPaths,
  envName,
  envOverrides,
  envVariables,
  leaves,
  loadConfigFile,
  mergeConfig,
  redactConfig,
  restartRequired,
  unknownVariables,
  validateConfig,
  type AgentConfig,
} from '../agent/config';

const dir = mkdtempSync(path.join(tmpdir(), 'fedgate-config-'));
let n = 0;
function file(text: string, ext = '.yaml'): string {
  const f = path.join(dir, `c${n++}${ext}`);
  writeFileSync(f, text);
  chmodSync(f, 0o600);
  return f;
}

/** The ConfigError a promise or function rejects with. */
async function configError(p: Promise<unknown> | (() => unknown)): Promise<ConfigError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

const noEnv = { env: {} };

describe('schema', () => {
  it('marks every setting of both roles with x-restart-required', () => {
    for (const role of ROLES) {
      const unmarked = leaves(role).filter((l) => typeof l.node['x-restart-required'] !== 'boolean').map((l) => l.path);
      expect(unmarked, role).toEqual([]);
    }
  });

  it('fills the documented defaults', () => {
    expect(defaultConfig('agent')).toEqual({
      broker: { url: 'mqtt://localhost:1883', tls: { rejectUnauthorized: true }, maxPacketBytes: 131072, protocolVersion: 4 },
      fleet: { prefix: 'fedgate', name: 'default' },
      node: {},
      data: { dataset: 'mnist', shard: '0/1', partition: 'iid', seed: 1, csv: { labelColumn: 'label', ownerColumn: 'owner' } },
      training: { threads: 1, maxCpuLoad: 0.8, minBatteryPercent: 20, maxTemperatureC: 80, paused: false },
      compression: {},
      logging: { level: 'info' },
    });
    const agg = defaultConfig('aggregator');
    expect(agg.job).toEqual({ rounds: 20, clientsPerRound: 0, minClients: 1, waitSeconds: 300, epochs: 5, batchSize: 32, lr: 0.1, deadlineSeconds: 120, seed: 1, resume: 'never', modelOut: 'fedgate-model.onnx', strategy: 'balanced', overcommit: 1.3, targetQuantile: 0.5, maxIdleRounds: 0, foldLate: false });
    expect(agg.compression).toEqual({ codec: 'auto', k: 0.01, stochastic: false });
    expect(agg.model).toEqual({ hidden: [128] });
  });

  it('derives one distinct environment variable per setting', () => {
    expect(envName('broker.url')).toBe('FEDGATE_BROKER_URL');
    expect(envName('training.maxCpuLoad')).toBe('FEDGATE_TRAINING_MAX_CPU_LOAD');
    expect(envName('broker.tls.rejectUnauthorized')).toBe('FEDGATE_BROKER_TLS_REJECT_UNAUTHORIZED');
    expect(envName('stateDir')).toBe('FEDGATE_STATE_DIR');
    for (const role of ROLES) {
      const names = envVariables(role).flatMap((v) => v.names);
      expect(new Set(names).size, role).toBe(names.length);
    }
  });
});

describe('validateConfig', () => {
  it('lists every error at once, naming the field and the reason', () => {
    const input = { broker: { url: 'not a url', urll: 'x' }, training: { threads: 0, maxCpuLoad: 'high' }, logging: { level: 'loud' }, extra: 1 };
    const err = (() => {
      try {
        validateConfig(input, 'agent');
      } catch (e) {
        return e as ConfigError;
      }
      throw new Error('no error');
    })();
    expect(err.errors).toEqual([
      'extra: unknown setting; known here: broker, fleet, node, data, training, compression, logging, stateDir',
      'broker.urll: unknown setting; did you mean "url"?',
      'broker.url: must match format "uri"',
      'training.threads: must be >= 1',
      'training.maxCpuLoad: must be number (got string "high")',
      'logging.level: must be one of "fatal", "error", "warn", "info", "debug", "trace", "silent" (got "loud")',
    ]);
    expect(err.message).toBe(['invalid configuration (6 errors):', ...err.errors.map((e) => `  ${e}`)].join('\n'));
    expect(input.training.threads).toBe(0); // the argument is not changed
  });

  it('checks rules across fields once the schema passes', () => {
    expect(() => validateConfig({ data: { shard: '4/4' } }, 'agent')).toThrow('data.shard: the index must be below the count (got "4/4")');
    expect(() => validateConfig({ data: { dataset: 'csv' } }, 'agent')).toThrow('data.csv.file: is required when data.dataset is "csv"');
    expect(() => validateConfig({ broker: { tls: { cert: 'c.pem' } } }, 'agent')).toThrow('broker.tls.key: is required when broker.tls.cert is set');
    expect(() => validateConfig({ broker: { url: 'http://h:80' } }, 'agent')).toThrow('broker.url: must use one of mqtt://, mqtts://, ws://, wss://, tcp://, ssl://, tls:// (got "http://")');
  });

  it('checks the rules across fields even when the schema fails, so every error shows at once', () => {
    const err = (() => {
      try {
        validateConfig({ broker: { url: 'http://x', tls: { cert: 'c.pem' } }, data: { shard: '3/2' }, training: { threads: 0 } }, 'agent');
      } catch (e) {
        return e as ConfigError;
      }
      throw new Error('no error');
    })();
    expect(err.errors).toEqual([
      'training.threads: must be >= 1',
      'broker.url: must use one of mqtt://, mqtts://, ws://, wss://, tcp://, ssl://, tls:// (got "http://")',
      'broker.tls.key: is required when broker.tls.cert is set',
      'data.shard: the index must be below the count (got "3/2")',
    ]);
    // A value the schema already refuses is not judged again by a cross-field rule.
    expect(() => validateConfig({ data: { shard: '3 of 2' }, broker: { url: 42 } }, 'agent')).toThrow(
      ['invalid configuration (2 errors):', '  broker.url: must be string (got number 42)', '  data.shard: must be "<index>/<count>", e.g. "3/10" (got "3 of 2")'].join('\n'),
    );
  });

  it('explains patterns in words', () => {
    expect(() => validateConfig({ node: { id: 'gw/1' } }, 'agent')).toThrow('node.id: must be one MQTT topic level of at most 64 characters: no "+", "#", "/", white space or leading "$" (got "gw/1")');
    expect(() => validateConfig({ data: { shard: '1 of 4' } }, 'agent')).toThrow('data.shard: must be "<index>/<count>", e.g. "3/10" (got "1 of 4")');
  });

  // Regression: simulate --partition owner started gateways that each refused data.partition "owner".
  it('takes data.partition iid, dirichlet:<alpha> and owner; refuses anything else', () => {
    for (const partition of ['iid', 'dirichlet:0.5', 'owner']) expect(validateConfig({ data: { partition } }, 'agent').data.partition).toBe(partition);
    for (const partition of ['owners', 'owner:1', 'dirichlet']) expect(() => validateConfig({ data: { partition } }, 'agent')).toThrow(`data.partition: `);
  });

  it('refuses a document that is not a mapping', () => {
    expect(() => validateConfig([], 'agent')).toThrow('(root): must be a mapping of settings (got an array)');
  });

  it('knows the aggregator has no node or training section', () => {
    expect(() => validateConfig({ training: { threads: 2 } }, 'aggregator')).toThrow('training: unknown setting');
    expect(validateConfig({ model: { hidden: [64, 32] } }, 'aggregator').model.hidden).toEqual([64, 32]);
  });
});

describe('loadConfigFile', () => {
  it('reads YAML over the defaults', async () => {
    const f = file('broker:\n  url: mqtts://broker.example:8883\n  username: gw-7\nnode:\n  id: gw-7\ntraining:\n  threads: 2\n');
    const cfg = await loadConfigFile(f, 'agent', noEnv);
    expect(cfg.broker).toEqual({ url: 'mqtts://broker.example:8883', username: 'gw-7', tls: { rejectUnauthorized: true }, maxPacketBytes: 131072, protocolVersion: 4 });
    expect(cfg.node.id).toBe('gw-7');
    expect(cfg.training).toEqual({ threads: 2, maxCpuLoad: 0.8, minBatteryPercent: 20, maxTemperatureC: 80, paused: false });
  });

  it('reads JSON by extension, and either format by content for other names', async () => {
    expect((await loadConfigFile(file('{"job": {"rounds": 3}}', '.json'), 'aggregator', noEnv)).job.rounds).toBe(3);
    expect((await loadConfigFile(file('{"job": {"rounds": 4}}', '.conf'), 'aggregator', noEnv)).job.rounds).toBe(4);
    expect((await loadConfigFile(file('job:\n  rounds: 5\n', '.conf'), 'aggregator', noEnv)).job.rounds).toBe(5);
  });

  it('takes an empty file (or only comments) as all defaults', async () => {
    expect(await loadConfigFile(file('# nothing set yet\n'), 'agent', noEnv)).toEqual(defaultConfig('agent'));
  });

  it('says when the file is missing', async () => {
    const f = path.join(dir, 'absent.yaml');
    const err = await configError(loadConfigFile(f, 'agent', noEnv));
    expect(err.message).toBe(`${f}: cannot read configuration: no such file`);
    expect(err.file).toBe(f);
  });

  it('gives the line and column of a YAML syntax error', async () => {
    const f = file('broker:\n  url: mqtt://h:1883\n  username: [gw-1\ntraining:\n  threads: 2\n');
    const err = await configError(loadConfigFile(f, 'agent', noEnv));
    expect(err.message).toMatch(new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: not valid YAML: line \\d+, column \\d+: `));
    expect(err.errors[0]).toMatch(/^line [34], column \d+: /);
  });

  it('reports a duplicate YAML key with its line', async () => {
    const err = await configError(loadConfigFile(file('training:\n  threads: 1\n  threads: 2\n'), 'agent', noEnv));
    expect(err.errors).toEqual(['line 3, column 3: Map keys must be unique']);
  });

  it('gives the line and column of a JSON syntax error', async () => {
    const f = file('{\n  "broker": {\n    "url": "mqtt://h:1883",\n  }\n}\n', '.json');
    const err = await configError(loadConfigFile(f, 'agent', noEnv));
    expect(err.message).toBe(`${f}: not valid JSON: line 4, column 3: Expected double-quoted property name`);
  });

  it('names each invalid setting with its line in the file, all at once', async () => {
    const f = file('broker:\n  url: nope\ntraining:\n  threads: 0\n  turbo: true\n');
    const err = await configError(loadConfigFile(f, 'agent', noEnv));
    expect(err.errors).toEqual([
      'broker.url: must match format "uri" (line 2, column 3)',
      'training.turbo: unknown setting; known here: threads, maxCpuLoad, minBatteryPercent, maxTemperatureC, paused (line 5, column 3)',
      'training.threads: must be >= 1 (line 4, column 3)',
    ]);
    expect(err.message.split('\n')[0]).toBe(`${f}: invalid configuration (3 errors):`);
  });

  it('reports a wrong type', async () => {
    const err = await configError(loadConfigFile(file('training:\n  threads: "two"\nbroker: mqtt://h\n'), 'agent', noEnv));
    expect(err.errors).toEqual([
      'broker: must be object (got string "mqtt://h") (line 3, column 1)',
      'training.threads: must be integer (got string "two") (line 2, column 3)',
    ]);
  });

  it('refuses a file that holds a list', async () => {
    const f = file('- a\n- b\n');
    const err = await configError(loadConfigFile(f, 'agent', noEnv));
    expect(err.message).toBe(`${f}: invalid configuration (1 error):\n  (root): must be a mapping of settings (got an array)`);
  });

  it('takes data.csv.classes from the file or FEDGATE_DATA_CSV_CLASSES (comma-separated or a JSON array); refuses an empty list or a name twice', async () => {
    const f = file('data:\n  dataset: csv\n  csv:\n    file: pets.csv\n    classes: [bird, cat, dog]\n');
    expect((await loadConfigFile(f, 'agent', noEnv)).data.csv.classes).toEqual(['bird', 'cat', 'dog']);
    expect((await loadConfigFile(f, 'agent', { env: { FEDGATE_DATA_CSV_CLASSES: 'ant,bee' } })).data.csv.classes).toEqual(['ant', 'bee']);
    expect(envOverrides('agent', { FEDGATE_DATA_CSV_CLASSES: '["a, b","c"]' }).partial).toEqual({ data: { csv: { classes: ['a, b', 'c'] } } });
    expect(() => validateConfig({ data: { csv: { classes: ['cat', 'cat'] } } }, 'agent')).toThrow('data.csv.classes: must NOT have duplicate items (items ## 1 and 0 are identical)');
    expect(() => validateConfig({ data: { csv: { classes: [] } } }, 'agent')).toThrow('data.csv.classes: must NOT have fewer than 1 items');
  });

  it('applies environment overrides with the schema types, over the file', async () => {
    const f = file('training:\n  threads: 2\n');
    const cfg = await loadConfigFile(f, 'agent', {
      env: {
        FEDGATE_TRAINING_THREADS: '4',
        FEDGATE_TRAINING_MAX_CPU_LOAD: '0.5',
        FEDGATE_BROKER_TLS_REJECT_UNAUTHORIZED: 'no',
        FEDGATE_BROKER_URL: 'mqtt://10.0.0.2:1883',
        FEDGATE_MQTT_PASSWORD: 's3cret',
        FEDGATE_NODE_ID: '',
        FEDGATE_UNRELATED: 'x',
      },
    });
    expect(cfg.training.threads).toBe(4);
    expect(cfg.training.maxCpuLoad).toBe(0.5);
    expect(cfg.broker.tls.rejectUnauthorized).toBe(false);
    expect(cfg.broker.url).toBe('mqtt://10.0.0.2:1883');
    expect(cfg.broker.password).toBe('s3cret');
    expect(cfg.node.id).toBeUndefined(); // empty = unset
  });

  it('takes a setting from any of its names; two names with different values are an error', () => {
    expect(envOverrides('agent', { FEDGATE_BROKER_PASSWORD: 'a' }).partial).toEqual({ broker: { password: 'a' } });
    expect(envOverrides('agent', { FEDGATE_MQTT_PASSWORD: 'b' }).partial).toEqual({ broker: { password: 'b' } });
    expect(envOverrides('aggregator', { FEDGATE_MQTT_PASSWORD: 'b' }).partial).toEqual({ broker: { password: 'b' } });
    expect(envOverrides('agent', { FEDGATE_BROKER_PASSWORD: 'a', FEDGATE_MQTT_PASSWORD: 'a' })).toMatchObject({ partial: { broker: { password: 'a' } }, errors: [] });
    const both = envOverrides('agent', { FEDGATE_BROKER_PASSWORD: 'a', FEDGATE_MQTT_PASSWORD: 'b' });
    expect(both.partial).toEqual({});
    expect(both.errors).toEqual(['FEDGATE_BROKER_PASSWORD and FEDGATE_MQTT_PASSWORD: both set, to different values; they are one setting (broker.password): set one of them']);
    expect(envOverrides('agent', { FEDGATE_LOGGING_LEVEL: 'debug', FEDGATE_LOG_LEVEL: '' }).partial).toEqual({ logging: { level: 'debug' } });
    expect(envOverrides('aggregator', { FEDGATE_MODEL_HIDDEN: '64,32' }).partial).toEqual({ model: { hidden: [64, 32] } });
    expect(envOverrides('aggregator', { FEDGATE_MODEL_HIDDEN: '[16]' }).partial).toEqual({ model: { hidden: [16] } });
  });

  it('warns of a FEDGATE_ variable that is no setting, naming the closest real one', async () => {
    const env = {
      FEDGATE_TRAINING_MAXCPULOAD: '0.5',
      FEDGATE_BOGUS_X: '1',
      FEDGATE_BROKER_URLL: 'mqtt://h:1883',
      FEDGATE_EMPTY_TYPO: '', // empty = unset, as for settings
      // Settings of either role (the same environment may serve both), aliases, and variables read directly.
      FEDGATE_TRAINING_MAX_CPU_LOAD: '0.6',
      FEDGATE_JOB_ROUNDS: '3',
      FEDGATE_LOG_LEVEL: 'info',
      FEDGATE_MQTT_PASSWORD: 'pw',
      FEDGATE_LOG_FORMAT: 'json',
      FEDGATE_COMPRESS_BACKEND: 'typescript',
      FEDGATE_DATA_DIR: '/data',
      FEDGATE_SKIP_NATIVE: '1',
      FEDGATE_BENCH_QUICK: '1',
      FEDGATE_REQUIRE_MOSQUITTO: '1',
      FEDGATE_REQUIRE_TOOLS: '1',
    };
    const expected = [
      'FEDGATE_BOGUS_X is not a fedgate variable and is ignored; a setting is FEDGATE_<SECTION>_<NAME> (training.maxCpuLoad: FEDGATE_TRAINING_MAX_CPU_LOAD), see `fedgate config schema`',
      'FEDGATE_BROKER_URLL is not a fedgate variable and is ignored; did you mean FEDGATE_BROKER_URL?',
      'FEDGATE_TRAINING_MAXCPULOAD is not a fedgate variable and is ignored; did you mean FEDGATE_TRAINING_MAX_CPU_LOAD?',
    ];
    expect(envOverrides('agent', env).warnings).toEqual(expected);
    expect(envOverrides('aggregator', env).warnings).toEqual(expected);
    const warned: string[] = [];
    const cfg = await loadConfigFile(file('training:\n  threads: 2\n'), 'agent', { env, onWarning: (m) => warned.push(m) });
    expect(warned).toEqual(expected);
    expect(cfg.training.maxCpuLoad).toBe(0.6);
  });

  it('knows every FEDGATE_ variable the code reads directly', () => {
    const root = path.resolve(__dirname, '..');
    const read = new Set<string>();
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (/\.(ts|js)$/.test(e.name)) for (const m of readFileSync(p, 'utf8').matchAll(/(?:process\.env\.|env\(['"]|env\[['"])(FEDGATE_[A-Z0-9_]+)/g)) read.add(m[1]);
      }
    };
    for (const d of ['agent', 'bench', 'native', 'test']) if (existsSync(path.join(root, d))) walk(path.join(root, d));
    expect([...read].sort()).toEqual(expect.arrayContaining(['FEDGATE_COMPRESS_BACKEND', 'FEDGATE_DATA_DIR', 'FEDGATE_LOG_FORMAT', 'FEDGATE_MQTT_PASSWORD', 'FEDGATE_REQUIRE_MOSQUITTO']));
    expect(unknownVariables(Object.fromEntries([...read].map((v) => [v, '1'])))).toEqual([]);
  });

  it('names the variable of an invalid environment value', async () => {
    const f = file('training:\n  threads: 2\n');
    const err = await configError(loadConfigFile(f, 'agent', {
      env: { FEDGATE_TRAINING_THREADS: 'four', FEDGATE_TRAINING_PAUSED: 'maybe', FEDGATE_BROKER_MAX_PACKET_BYTES: '100', FEDGATE_LOGGING_LEVEL: 'loud' },
    }));
    expect(err.errors).toEqual([
      'FEDGATE_TRAINING_THREADS: "four" is not an integer (sets training.threads)',
      'FEDGATE_TRAINING_PAUSED: "maybe" is not a boolean (true/false, 1/0, yes/no, on/off) (sets training.paused)',
      'broker.maxPacketBytes: must be >= 1024 (from FEDGATE_BROKER_MAX_PACKET_BYTES)',
      'logging.level: must be one of "fatal", "error", "warn", "info", "debug", "trace", "silent" (got "loud") (from FEDGATE_LOGGING_LEVEL)',
    ]);
  });
});

describe('mergeConfig', () => {
  const base = validateConfig({ broker: { username: 'gw-1', password: 'pw' }, compression: { codec: 'topk', k: 0.05 } }, 'agent');

  it('merges objects deeply, replaces arrays and scalars, leaves both arguments alone', () => {
    const before = JSON.stringify(base);
    const merged = mergeConfig(base, { training: { threads: 3 }, broker: { tls: { ca: '/etc/ca.pem' } } });
    expect(merged.training).toEqual({ ...base.training, threads: 3 });
    expect(merged.broker).toEqual({ ...base.broker, tls: { rejectUnauthorized: true, ca: '/etc/ca.pem' } });
    expect(JSON.stringify(base)).toBe(before);
    const agg = defaultConfig('aggregator');
    expect(mergeConfig(agg, { model: { hidden: [32] } }).model.hidden).toEqual([32]);
  });

  it('removes a setting given as null, so its default applies again', () => {
    const merged = mergeConfig(base, { compression: { k: null }, broker: { password: null } });
    expect(merged.compression).toEqual({ codec: 'topk' });
    expect('password' in merged.broker).toBe(false);
    expect(validateConfig(mergeConfig(base, { training: null }), 'agent').training).toEqual(defaultConfig('agent').training);
  });

  it('cannot pollute prototypes: __proto__ stays a plain (unknown) setting', () => {
    const partial = JSON.parse('{"__proto__": {"polluted": true}, "training": {"__proto__": {"x": 1}}}');
    const merged = mergeConfig(base, partial) as AgentConfig & Record<string, unknown>;
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.getPrototypeOf(merged)).toBe(Object.prototype);
    expect(() => validateConfig(merged, 'agent')).toThrow('__proto__: unknown setting');
  });

  it('refuses a partial that is not an object', () => {
    expect(() => mergeConfig(base, [1])).toThrow('a partial configuration must be an object, got an array');
  });
});

describe('diffPaths and restartRequired', () => {
  it('lists the changed leaves, sorted', () => {
    const a = defaultConfig('agent');
    const b = mergeConfig(a, { training: { threads: 2, maxCpuLoad: 0.5 }, logging: { level: 'debug' }, compression: { codec: 'int4' } });
    expect(diffPaths(a, b)).toEqual(['compression.codec', 'logging.level', 'training.maxCpuLoad', 'training.threads']);
    expect(diffPaths(a, a)).toEqual([]);
    expect(diffPaths({ x: { y: 1, z: 2 } }, {})).toEqual(['x.y', 'x.z']);
    expect(diffPaths({ h: [1, 2] }, { h: [1, 3] })).toEqual(['h']);
  });

  it('tells which changes need a restart', () => {
    expect(restartRequired(['compression.codec', 'logging.level', 'training.maxCpuLoad', 'training.threads'])).toEqual(['training.threads']);
    expect(restartRequired(['broker.url', 'broker.maxPacketBytes', 'node.id'])).toEqual(['broker.url', 'node.id']);
    expect(restartRequired(['training', 'logging', 'broker.tls'])).toEqual(['training', 'broker.tls']);
    expect(restartRequired(['nonsense.setting'])).toEqual(['nonsense.setting']);
    expect(restartRequired(['job.rounds', 'job.seed', 'model.hidden', 'model.hidden.0'], 'aggregator')).toEqual(['job.seed', 'model.hidden', 'model.hidden.0']);
  });
});

describe('redactConfig', () => {
  it('replaces secrets and URL passwords, keeps everything else', () => {
    const cfg = validateConfig({ broker: { url: 'mqtt://gw-1:hunter2@broker:1883', username: 'gw-1', password: 'hunter2', tls: { key: '/etc/fedgate/key.pem', cert: '/etc/fedgate/cert.pem' } } }, 'agent');
    const red = redactConfig(cfg);
    expect(red.broker).toEqual({
      url: 'mqtt://gw-1:[redacted]@broker:1883',
      username: 'gw-1',
      password: '[redacted]',
      tls: { key: '/etc/fedgate/key.pem', cert: '/etc/fedgate/cert.pem', rejectUnauthorized: true },
      maxPacketBytes: 131072,
      protocolVersion: 4,
    });
    expect(JSON.stringify(red)).not.toContain('hunter2');
    expect(cfg.broker.password).toBe('hunter2'); // a copy
    expect(redactConfig(defaultConfig('agent'))).toEqual(defaultConfig('agent'));
  });
});

describe('fedgate config check', () => {
  const main = path.resolve(__dirname, '../dist/agent/cli/main.js');
  const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH, ...env } });

  it.skipIf(!existsSync(main))('prints "ok" and the effective settings, secrets redacted, and exits 0', () => {
    const f = file('broker:\n  url: mqtt://broker:1883\n  password: hunter2\n');
    const r = run(['config', 'check', f], { FEDGATE_TRAINING_THREADS: '3' });
    expect(r.status).toBe(0);
    expect(r.stdout.startsWith('ok\n')).toBe(true);
    const cfg = JSON.parse(r.stdout.slice(3));
    expect(cfg.broker.password).toBe('[redacted]');
    expect(cfg.training.threads).toBe(3);
    expect(r.stdout).not.toContain('hunter2');
  });

  it.skipIf(!existsSync(main))('lists every error and exits 1', () => {
    const f = file('job:\n  rounds: 0\n  epochs: -1\n');
    const r = run(['config', 'check', f, '--role', 'aggregator']);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`fedgate: ${f}: invalid configuration (2 errors):\n  job.rounds: must be >= 1 (line 2, column 3)\n  job.epochs: must be >= 1 (line 3, column 3)\n`);
  });

  it.skipIf(!existsSync(main))('lists the schema errors and the cross-field ones together, each with its line', () => {
    const f = file('broker:\n  url: http://x\ndata:\n  shard: 3/2\ntraining:\n  threads: 0\n');
    const r = run(['config', 'check', f]);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe([
      `fedgate: ${f}: invalid configuration (3 errors):`,
      '  training.threads: must be >= 1 (line 6, column 3)',
      '  broker.url: must use one of mqtt://, mqtts://, ws://, wss://, tcp://, ssl://, tls:// (got "http://") (line 2, column 3)',
      '  data.shard: the index must be below the count (got "3/2") (line 4, column 3)',
      '',
    ].join('\n'));
  });

  it.skipIf(!existsSync(main))('warns of a misspelt variable on stderr and still checks the file', () => {
    const f = file('training:\n  threads: 2\n');
    const r = run(['config', 'check', f], { FEDGATE_TRAINING_MAXCPULOAD: '0.5', FEDGATE_LOG_FORMAT: 'json' });
    expect(r.status).toBe(0);
    expect(r.stderr).toBe('fedgate: warning: FEDGATE_TRAINING_MAXCPULOAD is not a fedgate variable and is ignored; did you mean FEDGATE_TRAINING_MAX_CPU_LOAD?\n');
    expect(JSON.parse(r.stdout.slice(3)).training.maxCpuLoad).toBe(0.8);
  });

  it.skipIf(!existsSync(main))('refuses the two password variables set to different values', () => {
    const f = file('training:\n  threads: 2\n');
    const r = run(['config', 'check', f], { FEDGATE_BROKER_PASSWORD: 'a', FEDGATE_MQTT_PASSWORD: 'b' });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`fedgate: ${f}: invalid configuration (1 error):\n  FEDGATE_BROKER_PASSWORD and FEDGATE_MQTT_PASSWORD: both set, to different values; they are one setting (broker.password): set one of them\n`);
    const same = run(['config', 'check', file('job:\n  rounds: 3\n'), '--role', 'aggregator'], { FEDGATE_BROKER_PASSWORD: 'a', FEDGATE_MQTT_PASSWORD: 'a' });
    expect(same.status).toBe(0);
    expect(JSON.parse(same.stdout.slice(3)).broker.password).toBe('[redacted]');
  });

  it.skipIf(!existsSync(main))('exits 1 on a missing file', () => {
    const r = run(['config', 'check', path.join(dir, 'nope.yaml')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`fedgate: ${path.join(dir, 'nope.yaml')}: cannot read configuration: no such file\n`);
  });
});
