/**
 * Exit statuses for systemd. 78 is EX_CONFIG (sysexits.h; systemd shows it as `status=78/CONFIG`):
 * a configuration error that restarting cannot fix. The units list it in RestartPreventExitStatus=,
 * so `Restart=on-failure` does not restart a process that exits with it; agent/cli/main.ts exits
 * with an error's `exitCode` when it has one.
 */
export const EXIT_CONFIG = 78;

/** An Error that makes the CLI exit with EXIT_CONFIG (not restarted under systemd). */
export class PermanentConfigError extends Error {
  override readonly name = 'PermanentConfigError';
  readonly exitCode = EXIT_CONFIG;
}
