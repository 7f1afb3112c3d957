import pino, { type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

const REDACT = ['password', '*.password', '*.*.password', 'key', '*.key', 'secret', '*.secret', 'token', '*.token'];

let root: Logger | undefined;

/**
 * The process-wide root logger. JSON lines to stderr by default so that stdout stays free for
 * the per-round progress lines and for machine-readable output (`fedgate profile`).
 */
export function rootLogger(): Logger {
  if (!root) {
    const level = (process.env.FEDGATE_LOG_LEVEL as LevelWithSilent | undefined) ?? 'warn';
    root = pino({ level, base: { pid: process.pid }, redact: { paths: REDACT, censor: '[redacted]' } }, pino.destination({ fd: 2, sync: true }));
  }
  return root;
}

export function setLogLevel(level: LevelWithSilent): void {
  rootLogger().level = level;
}

/** One child logger per module: `logger('transport')` tags every line with `{module: "transport"}`. */
export function logger(module: string, bindings: Record<string, unknown> = {}): Logger {
  return rootLogger().child({ module, ...bindings });
}
