import { Option, type Command } from 'commander';
import { loadConfigFile, redactConfig, schemaFor, ROLES, type Role } from '../../config';

const roleOption = () => new Option('--role <role>', 'whose settings: agent or aggregator').choices([...ROLES]).default('agent');

/** `fedgate config check <file>` and `fedgate config schema`. */
export function addConfigCommand(program: Command): Command {
  const config = program.command('config').description('check a settings file, print the settings schema');

  config
    .command('check <file>')
    .description('validate a YAML or JSON settings file (with the FEDGATE_* environment overrides applied): prints "ok" and the effective settings (secrets redacted), or every error and exits 1; warns of FEDGATE_* variables that are no setting')
    .addOption(roleOption())
    .action(async (file: string, o: { role: Role }) => {
      const cfg = await loadConfigFile(file, o.role, { onWarning: (m) => process.stderr.write(`fedgate: warning: ${m}\n`) });
      process.stdout.write('ok\n' + JSON.stringify(redactConfig(cfg), null, 2) + '\n');
    });

  config
    .command('schema')
    .description('print the JSON Schema of the settings (for editors and for reference)')
    .addOption(roleOption())
    .action((o: { role: Role }) => {
      process.stdout.write(JSON.stringify({ $schema: 'http://json-schema.org/draft-07/schema#', ...schemaFor(o.role) }, null, 2) + '\n');
    });

  return config;
}
