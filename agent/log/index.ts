import pino, { type Logger, type LevelWithSilent, type DestinationStream } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

const REDACT = ['password', '*.password', '*.*.password', 'key', '*.key', 'secret', '*.secret', 'token', '*.token'];

let root: Logger | undefined;

/**
 * Where log lines go: stderr, so that stdout stays free for the per-round progress lines and for
 * machine-readable output (`fedgate profile`). JSON lines (for journald, Docker, log shippers),
 * or readable lines when stderr is a terminal; FEDGATE_LOG_FORMAT=json|pretty decides explicitly.
 */
export function logDestination(format = process.env.FEDGATE_LOG_FORMAT, isTty = process.stderr.isTTY === true): DestinationStream {
  const usePretty = format === 'pretty' || (format !== 'json' && isTty);
  if (usePretty) return pretty({ destination: 2, sync: true, colorize: isTty, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' });
  return pino.destination({ fd: 2, sync: true });
}

/** The process-wide root logger; secrets (passwords, keys, tokens) are redacted from every line. */
export function rootLogger(): Logger {
  if (!root) {
    const level = (process.env.FEDGATE_LOG_LEVEL as LevelWithSilent | undefined) ?? 'warn';
    root = pino({ level, base: { pid: process.pid }, redact: { paths: REDACT, censor: '[redacted]' } }, logDestination());
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
