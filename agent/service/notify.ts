/**
 * systemd readiness and watchdog (sd_notify(3)) for `Type=notify` units: READY=1 once the process
 * serves, WATCHDOG=1 at half of $WATCHDOG_USEC while the event loop runs, STOPPING=1 on the way
 * out. Outside systemd ($NOTIFY_SOCKET unset) every call does nothing. The datagram is sent by the
 * native addon (Node has no unix datagram sockets); without it, a unit must use `Type=exec`.
 */
import { loadNative } from '../compress/native';
import { logger, type Logger } from '../log';

export type SendNotify = (socket: string, message: string) => void;

export interface ServiceNotifier {
  /** True when systemd listens ($NOTIFY_SOCKET set) and the addon can reach it. */
  readonly enabled: boolean;
  /** Watchdog period asked by systemd, or undefined. */
  readonly watchdogMs?: number;
  ready(status?: string): void;
  status(status: string): void;
  stopping(status?: string): void;
}

let nativeSend: SendNotify | null | undefined;
function defaultSend(): SendNotify | undefined {
  if (nativeSend === undefined) nativeSend = loadNative().sdNotify ?? null;
  return nativeSend ?? undefined;
}

/** Parses $WATCHDOG_USEC, honouring $WATCHDOG_PID (the watchdog is for that process only). */
export function watchdogMs(env: NodeJS.ProcessEnv, pid = process.pid): number | undefined {
  const usec = Number(env.WATCHDOG_USEC);
  if (!Number.isSafeInteger(usec) || usec <= 0) return undefined;
  if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== pid) return undefined;
  return usec / 1000;
}

const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim();

/** `send` defaults to the addon's sd_notify; `null` stands for an addon that is not built. */
export function serviceNotifier(opts: { env?: NodeJS.ProcessEnv; send?: SendNotify | null; log?: Logger; pid?: number } = {}): ServiceNotifier {
  const env = opts.env ?? process.env;
  const log = opts.log ?? logger('service');
  const socket = env.NOTIFY_SOCKET;
  const send = socket ? (opts.send === null ? undefined : (opts.send ?? defaultSend())) : undefined;
  if (socket && !send) {
    log.error({ socket }, 'NOTIFY_SOCKET is set but the native addon that speaks to it is not built: systemd will not see this service start (run node native/build.js, or use Type=exec in the unit)');
  }
  const enabled = socket !== undefined && send !== undefined;
  const period = enabled ? watchdogMs(env, opts.pid) : undefined;
  let timer: NodeJS.Timeout | undefined;
  let failed = false;
  const notify = (message: string): void => {
    if (!enabled) return;
    try {
      send!(socket!, message);
    } catch (err) {
      // Logged once: systemd going away must not flood the logs or stop the service.
      if (!failed) log.warn({ err: (err as Error).message }, 'could not notify systemd');
      failed = true;
    }
  };
  return {
    enabled,
    watchdogMs: period,
    ready(status) {
      notify(status ? `READY=1\nSTATUS=${oneLine(status)}` : 'READY=1');
      if (period && !timer) {
        timer = setInterval(() => notify('WATCHDOG=1'), period / 2);
        timer.unref();
      }
    },
    status(status) {
      notify(`STATUS=${oneLine(status)}`);
    },
    stopping(status) {
      clearInterval(timer);
      timer = undefined;
      notify(status ? `STOPPING=1\nSTATUS=${oneLine(status)}` : 'STOPPING=1');
    },
  };
}
