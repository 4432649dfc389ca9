#!/usr/bin/env node
/** The `vfio-bridge` executable: binds the CLI to this process's streams and exit code. */
import * as readline from 'node:readline/promises';

import type { CliIo } from './io';
import { run } from './program';

// The first Ctrl-C (or SIGTERM) asks a running command to stop and clean up (an `irqs --watch`
// disables the interrupts and releases the device); the listener is gone after it, so a second
// Ctrl-C ends the process the default way.
const stop = new AbortController();
const onSignal = (): void => stop.abort();
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, onSignal);

/** What a shell reports for a process that a closed pipe ended (128 + SIGPIPE). */
const EXIT_PIPE = 141;

// Node ignores SIGPIPE, so a reader that went away (`vfio-bridge list | head -1`) shows up as
// EPIPE on the stream. End quietly, as coreutils do, instead of printing a stack.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(EXIT_PIPE);
    throw e;
  });
}

const io: CliIo = {
  out: (s) => void process.stdout.write(s),
  err: (s) => void process.stderr.write(s),
  errIsTty: process.stderr.isTTY === true,
  env: process.env,
  signal: stop.signal,
  async confirm(question) {
    if (!process.stdin.isTTY) return null;
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
    try {
      return /^y(es)?$/i.test((await rl.question(question)).trim());
    } finally {
      rl.close();
    }
  },
};

run(process.argv.slice(2), io).then(
  (code) => {
    process.exitCode = code;
    // Nothing is left to stop: the signal listeners must not keep a finished command's process.
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.off(sig, onSignal);
  },
  (e: unknown) => {
    process.stderr.write(
      `vfio-bridge: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
    );
    process.exitCode = 1;
  },
);
