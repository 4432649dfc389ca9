/**
 * The man page, vfio-bridge(1), in roff, generated from the commander program that --help prints:
 * the same usage lines, options, descriptions and help texts (examples, what persists), so the
 * page cannot drift from the CLI. `npm run man` writes it to man/vfio-bridge.1.
 */
import type { Command } from 'commander';

import { DEFAULT_STATE_FILE } from './state';

/** Text as roff: backslashes and leading dots or quotes escaped. */
function roff(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .split('\n')
    .map((l) => (/^['.]/.test(l) ? `\\&${l}` : l))
    .join('\n');
}

/** What a command prints after its help (its examples, what persists), from its help listeners. */
function helpText(cmd: Command, position: 'after' | 'before'): string {
  let out = '';
  // addHelpText() registers listeners of these events; commander's Command is an EventEmitter.
  (cmd as unknown as NodeJS.EventEmitter).emit(`${position}Help`, {
    error: false,
    command: cmd,
    write: (s: string) => void (out += s),
  });
  return out.trim();
}

function section(cmd: Command, heading: string): string[] {
  const help = cmd.createHelp();
  const lines = [heading, roff(cmd.description())];
  const args = help.visibleArguments(cmd);
  if (args.length > 0) {
    lines.push('.RS');
    for (const a of args)
      lines.push('.TP', `.I ${roff(help.argumentTerm(a))}`, roff(help.argumentDescription(a)));
    lines.push('.RE');
  }
  const opts = help.visibleOptions(cmd);
  if (opts.length > 0) {
    lines.push('.RS');
    for (const o of opts)
      lines.push('.TP', `.B ${roff(help.optionTerm(o))}`, roff(help.optionDescription(o)));
    lines.push('.RE');
  }
  const after = helpText(cmd, 'after');
  if (after) lines.push('.PP', '.nf', roff(after), '.fi');
  return lines;
}

/** The commands as the page lists them: a command with subcommands (mdev) by its subcommands. */
function leaves(program: Command): Command[] {
  return program.commands.flatMap((c) =>
    c.commands.length > 0 ? c.commands.filter((s) => s.name() !== 'help') : [c],
  );
}

/** vfio-bridge(1) as roff. `date` is the page's date (YYYY-MM-DD). */
export function manPage(program: Command, version: string, date: string): string {
  const help = program.createHelp();
  const lines = [
    `.TH VFIO\\-BRIDGE 1 "${date}" "vfio-bridge ${roff(version)}" "User Commands"`,
    '.SH NAME',
    `vfio\\-bridge \\- ${roff(program.description())}`,
    '.SH SYNOPSIS',
    ...leaves(program).map(
      (c) => `.B vfio\\-bridge\n${roff(help.commandUsage(c).replace(/^vfio-bridge /, ''))}\n.br`,
    ),
    '.SH OPTIONS',
    '.RS',
    ...help
      .visibleOptions(program)
      .flatMap((o) => ['.TP', `.B ${roff(help.optionTerm(o))}`, roff(help.optionDescription(o))]),
    '.RE',
    '.SH COMMANDS',
    ...leaves(program).flatMap((c) => section(c, `.SS ${roff(help.commandUsage(c))}`)),
    '.SH "EXIT STATUS AND ERRORS"',
    '.nf',
    roff(helpText(program, 'after')),
    '.fi',
    '.SH ENVIRONMENT',
    '.TP\n.B VFIO_BRIDGE_STATE\nthe state file, when \\-\\-state is not given',
    '.TP\n.B VFIO_BRIDGE_PCI_IDS\nthe pci.ids file, when \\-\\-pci\\-ids is not given',
    '.TP\n.B VFIO_BRIDGE_MODULES_ALIAS\nthe modules.alias that list matches modules against (default /lib/modules/$(uname \\-r)/modules.alias)',
    '.TP\n.B VFIO_BRIDGE_SYSFS_ROOT, VFIO_BRIDGE_PROC_ROOT\nwhere sysfs and /proc are (tests point them at fake trees)',
    '.SH FILES',
    `.TP\n.I ${roff(DEFAULT_STATE_FILE)}\nthe drivers each device had before bind or unbind, and the group nodes handed to users; emptied at boot`,
    `.TP\n.I ${roff(DEFAULT_STATE_FILE)}.lock\nheld while a command changes the state file`,
    '.SH "SEE ALSO"',
    'lspci(8), driverctl(8), modprobe(8)',
  ];
  return lines.join('\n') + '\n';
}
