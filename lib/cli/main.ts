#!/usr/bin/env node
/** The `vfio-bridge` executable: binds the CLI to this process's streams and exit code. */
import * as readline from 'node:readline/promises';

import type { CliIo } from './io';
import { run } from './program';

const io: CliIo = {
  out: (s) => void process.stdout.write(s),
  err: (s) => void process.stderr.write(s),
  errIsTty: process.stderr.isTTY === true,
  env: process.env,
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
  },
  (e: unknown) => {
    process.stderr.write(
      `vfio-bridge: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
    );
    process.exitCode = 1;
  },
);
