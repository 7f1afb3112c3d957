import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import YAML, { LineCounter, isMap, isScalar, type Document } from 'yaml';
import { ConfigError } from './errors';
import { envOverrides } from './env';
import { mergeConfig, isPlainObject } from './merge';
import { checkConfig, defaultConfig, formatIssue, type ConfigIssue } from './validate';
import type { Role } from './schema';
import type { ConfigFor } from './types';
import { logger } from '../log';

export interface LoadOptions {
  /** Where the overrides are read from; default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Told each warning (an unknown FEDGATE_ variable); default: logged. */
  onWarning?: (message: string) => void;
}

type Format = 'yaml' | 'json';

/** By extension; for any other name, by content (a document starting with `{` is JSON). */
export function formatOf(file: string, text: string): Format {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.json') return 'json';
  if (ext === '.yaml' || ext === '.yml') return 'yaml';
  return text.trimStart().startsWith('{') ? 'json' : 'yaml';
}

interface Parsed {
  value: unknown;
  /** For locating settings in the text (JSON is parsed again as YAML, of which it is a subset). */
  doc?: Document;
  lines: LineCounter;
}

function at(lines: LineCounter, offset: number): string {
  const { line, col } = lines.linePos(offset);
  return `line ${line}, column ${col}`;
}

function parseYaml(text: string): Parsed | { errors: string[] } {
  const lines = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) return { errors: doc.errors.map((e) => `${at(lines, e.pos[0])}: ${e.message}`) };
  return { value: doc.toJS({ maxAliasCount: 100 }), doc, lines };
}

function parseJson(text: string): Parsed | { errors: string[] } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    const message = (err as Error).message;
    const pos = /at position (\d+)/.exec(message);
    const lines = new LineCounter();
    YAML.parseDocument(text, { lineCounter: lines });
    return { errors: [pos ? `${at(lines, Number(pos[1]))}: ${message.replace(/ in JSON at position \d+.*$/s, '')}` : message] };
  }
  const located = parseYaml(text);
  return 'errors' in located ? { value, lines: new LineCounter() } : { ...located, value };
}

/** " (line 3, column 12)": where the key of the setting at `dotted` (or of its nearest ancestor in the file) is. */
function locate(parsed: Parsed, dotted: string): string {
  if (!parsed.doc) return '';
  const keys = dotted === '(root)' ? [] : dotted.split('.');
  for (let n = keys.length; n > 0; n--) {
    const parent = n === 1 ? parsed.doc.contents : parsed.doc.getIn(keys.slice(0, n - 1), true);
    if (!isMap(parent)) continue;
    const pair = parent.items.find((p) => isScalar(p.key) && String(p.key.value) === keys[n - 1]);
    const range = pair && isScalar(pair.key) ? pair.key.range : undefined;
    if (range) return ` (${at(parsed.lines, range[0])})`;
  }
  return '';
}

async function warnIfReadable(file: string, value: unknown): Promise<void> {
  const broker = isPlainObject(value) ? value.broker : undefined;
  if (!isPlainObject(broker) || broker.password === undefined) return;
  const st = await fs.stat(file).catch(() => undefined);
  if (st && st.mode & 0o004) {
    logger('config').warn({ file }, 'the config file holds broker.password and is readable by every user: chmod 600 it, or set FEDGATE_BROKER_PASSWORD in the environment instead');
  }
}

/**
 * Reads a YAML or JSON settings file, merges it over the role's defaults, applies the environment
 * overrides (FEDGATE_BROKER_URL, FEDGATE_TRAINING_THREADS, … see env.ts) and validates the result.
 * Throws a ConfigError naming the file and listing every problem: each invalid setting with its
 * line in the file or the variable that set it, or the parse errors with line and column.
 */
export async function loadConfigFile<R extends Role>(file: string, role: R, opts: LoadOptions = {}): Promise<ConfigFor<R>> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const reason = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'is a directory, not a file' : e.message;
    throw new ConfigError([reason], file, 'cannot read configuration');
  }
  const format = formatOf(file, text);
  const parsed = format === 'json' ? parseJson(text) : parseYaml(text);
  if ('errors' in parsed) throw new ConfigError(parsed.errors, file, `not valid ${format === 'json' ? 'JSON' : 'YAML'}`);
  // An empty file (or one holding only comments) means: all defaults.
  const fromFile = parsed.value ?? {};
  if (!isPlainObject(fromFile)) {
    throw new ConfigError([`(root): must be a mapping of settings (got ${Array.isArray(fromFile) ? 'an array' : typeof fromFile})`], file);
  }
  await warnIfReadable(file, fromFile);

  const env = envOverrides(role, opts.env ?? process.env);
  for (const w of env.warnings) (opts.onWarning ?? ((m: string) => logger('config').warn(m)))(w);
  const merged = mergeConfig(mergeConfig(defaultConfig(role), fromFile), env.partial);
  const { config, issues } = checkConfig(merged, role);
  const where = (i: ConfigIssue): string => {
    const variable = env.sources.get(i.path);
    return variable ? ` (from ${variable})` : locate(parsed, i.path);
  };
  const errors = [...env.errors, ...issues.map((i) => formatIssue(i) + where(i))];
  if (errors.length || !config) throw new ConfigError(errors, file);
  return config;
}
