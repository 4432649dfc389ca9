/**
 * The `vfio-bridge` command line, on commander: one subcommand per operation, each with --help and
 * an example, --json output with a schema (schema.ts), and exit codes 0 (done), 1 (the operation
 * failed; the VfioError message and hint on stderr) and 2 (usage error).
 */

import { Command, CommanderError } from 'commander';

import { describeFailure, EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError } from './errors';
import { sysfsOf, type CliIo } from './io';
import { SCHEMAS } from './schema';
import { addAccessCommands } from './commands/access';
import { example } from './commands/common';
import { addDeviceCommands } from './commands/device';
import { addDriverCommands } from './commands/drivers';

/** Build the program. `io` receives everything it prints. */
export function buildProgram(io: CliIo): Command {
  const program = new Command('vfio-bridge')
    .description('Inspect PCI devices, move them to vfio-pci and back, and look inside them through VFIO.')
    .exitOverride()
    .showHelpAfterError('(add --help for usage)')
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) });
  const sysfs = sysfsOf(io);

  addDriverCommands(program, io, sysfs);
  addAccessCommands(program, io, sysfs);
  addDeviceCommands(program, io, sysfs);

  example(
    program
      .command('schema')
      .description("print the JSON Schema of a command's --json output")
      .argument('<command>', Object.keys(SCHEMAS).join(', ')),
    'vfio-bridge schema list',
  ).action((name: string) => {
    const s = SCHEMAS[name];
    if (s === undefined)
      throw new UsageError(
        `no schema for ${JSON.stringify(name)}`,
        `one of ${Object.keys(SCHEMAS).join(', ')}`,
      );
    io.out(JSON.stringify(s, null, 2) + '\n');
  });

  return program;
}

/** Run the CLI on `argv` (without node and the script) and return the exit code. */
export async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return EXIT_OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version are successes; everything else commander refuses is a usage error,
      // which it has already explained on stderr.
      if (
        e.code === 'commander.helpDisplayed' ||
        e.code === 'commander.help' ||
        e.code === 'commander.version'
      ) {
        return EXIT_OK;
      }
      return e.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    const f = describeFailure(e);
    io.err(`vfio-bridge: ${f.text}\n`);
    return f.code === EXIT_USAGE ? EXIT_USAGE : EXIT_FAILED;
  }
}
