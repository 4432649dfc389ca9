/**
 * The `vfio-bridge` command line, on commander: one subcommand per operation, each with --help and
 * an example, --json output with a schema (schema.ts), and exit codes 0 (done), 1 (the operation
 * failed) and 2 (usage error). A failure is reported on stderr the same way by every command: as
 * `vfio-bridge: MESSAGE [CODE]` and `  hint: HINT`, or with --json as one `{"error":{...}}` line.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Command, CommanderError } from 'commander';

import {
  EXIT_OK,
  EXIT_USAGE,
  formatFailure,
  formatFailureJson,
  reportFailure,
  UsageError,
  type FailureReport,
} from './errors';
import { sysfsOf, type CliIo } from './io';
import { bashCompletion, zshCompletion } from './completion';
import { SCHEMAS } from './schema';
import { addAccessCommands } from './commands/access';
import { example } from './commands/common';
import { addDeviceCommands } from './commands/device';
import { addDriverCommands } from './commands/drivers';
import { addLabCommand } from './commands/lab';
import { addMdevCommands } from './commands/mdev';

const FAILURE_HELP = `
Exit status: 0 done, 1 the operation failed, 2 the command line is wrong, 130 stopped (Ctrl-C).
lab exits with its command's status instead (and 3, 75 or 124, as lab --help says).
Failures go to stderr as "vfio-bridge: MESSAGE [CODE]" and "  hint: HINT"; with --json as one line
{"error":{"message":...,"hint":...,"code":...}} (stdout then holds nothing). CODE is an errno name
(EBUSY, ENOENT, ...), a vfio-bridge code (ENOTVIABLE, ...), EUSAGE, or ERR_OUT_OF_RANGE /
ERR_INVALID_ARG_TYPE for an argument the library refused (exit 2 as EUSAGE).
A closed pipe on stdout (vfio-bridge list | head -1) ends the command quietly with status 141.
`;

/** The version in the package's package.json (two levels up from lib/cli and from dist/cli). */
export function packageVersion(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/** The exit status a command asked for (the lab's is its command's); absent means EXIT_OK. */
const exitStatuses = new WeakMap<Command, number>();

/** Build the program. `io` receives everything it prints. */
export function buildProgram(io: CliIo): Command {
  const program = new Command('vfio-bridge')
    .description(
      'Inspect PCI devices, move them to vfio-pci and back, look inside them through VFIO, and test ' +
        'against emulated ones on real vfio-pci in a lab guest.',
    )
    .version(packageVersion(), '-V, --version', 'print the version of vfio-bridge')
    .exitOverride()
    // Commander's own complaints are reported by run() like every other failure.
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s), outputError: () => {} })
    .addHelpText('after', FAILURE_HELP);
  const sysfs = sysfsOf(io);

  addDriverCommands(program, io, sysfs);
  addAccessCommands(program, io, sysfs);
  addDeviceCommands(program, io, sysfs);
  addMdevCommands(program, io, sysfs);
  addLabCommand(program, io, (status) => exitStatuses.set(program, status));

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

  example(
    program
      .command('completion')
      .description('print a bash or zsh completion script, made from this program so it cannot drift')
      .argument('<shell>', 'bash or zsh'),
    'source <(vfio-bridge completion bash)',
    'vfio-bridge completion zsh > "${fpath[1]}/_vfio-bridge"',
  ).action((shell: string) => {
    const make = { bash: bashCompletion, zsh: zshCompletion }[shell];
    if (make === undefined)
      throw new UsageError(`no completion for ${JSON.stringify(shell)}`, 'one of bash, zsh');
    io.out(make(program));
  });

  return program;
}

/** The report for a command line commander refused, pointing at the command's --help. */
function commanderFailure(e: CommanderError, argv: readonly string[], program: Command): FailureReport {
  const names = new Set(program.commands.map((c) => c.name()));
  const cmd = argv.find((a) => names.has(a));
  return {
    exit: EXIT_USAGE,
    message: e.message.replace(/^error: /, ''),
    hint: `see vfio-bridge ${cmd !== undefined ? `${cmd} ` : ''}--help`,
    code: 'EUSAGE',
  };
}

/** Run the CLI on `argv` (without node and the script) and return the exit code. */
export async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const program = buildProgram(io);
  const dashdash = argv.indexOf('--');
  const json = (dashdash < 0 ? argv : argv.slice(0, dashdash)).includes('--json');
  let report: FailureReport;
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return exitStatuses.get(program) ?? EXIT_OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version are successes; everything else commander refuses is a usage error.
      if (
        e.code === 'commander.helpDisplayed' ||
        e.code === 'commander.help' ||
        e.code === 'commander.version' ||
        e.exitCode === 0
      ) {
        return EXIT_OK;
      }
      report = commanderFailure(e, argv, program);
    } else report = reportFailure(e);
  }
  io.err(json ? formatFailureJson(report) : formatFailure(report));
  return report.exit;
}
