/**
 * One error for a whole file or object: every problem found, each as "<field>: <reason>", so an
 * operator fixes them all in one go. `file` is set when the settings came from a file.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';

  constructor(readonly errors: string[], readonly file?: string, headline?: string) {
    super(ConfigError.format(errors, file, headline));
  }

  private static format(errors: string[], file: string | undefined, headline: string | undefined): string {
    const head = headline ?? `invalid configuration (${errors.length} error${errors.length === 1 ? '' : 's'})`;
    const where = file ? `${file}: ` : '';
    if (errors.length === 1 && headline) return `${where}${head}: ${errors[0]}`;
    return `${where}${head}:\n${errors.map((e) => `  ${e}`).join('\n')}`;
  }
}
