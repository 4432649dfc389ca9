/**
 * Write the man page vfio-bridge(1) from the CLI's own commander program: `npm run man`
 * (man/vfio-bridge.1, or the file named as the first argument).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { manPage } from '../lib/cli/man';
import { buildProgram, packageVersion } from '../lib/cli/program';

const out = process.argv[2] ?? path.join(__dirname, '..', 'man', 'vfio-bridge.1');
const program = buildProgram({
  out: () => undefined,
  err: () => undefined,
  errIsTty: false,
  env: {},
  confirm: async () => null,
});
// The date of the last change to the CLI keeps the page reproducible; today when unknown.
const date = process.env.SOURCE_DATE_EPOCH
  ? new Date(Number(process.env.SOURCE_DATE_EPOCH) * 1000).toISOString().slice(0, 10)
  : new Date().toISOString().slice(0, 10);
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, manPage(program, packageVersion(), date));
process.stdout.write(`wrote ${out}\n`);
