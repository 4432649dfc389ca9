/**
 * Running the CLI in-process, as the executable would, with its output captured, and checking
 * --json output against the command's published schema. Shared by the fake-sysfs and lab tests.
 */
import Ajv2020 from 'ajv/dist/2020';

import type { CliIo } from '../../lib/cli/io';
import { run } from '../../lib/cli/program';
import { SCHEMAS } from '../../lib/cli/schema';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Run the CLI in-process with `env` (sysfs root, state file, pci.ids), a scripted confirmation and
 * the operator's Ctrl-C as `signal`.
 */
export async function cli(
  argv: string[],
  env: NodeJS.ProcessEnv,
  confirm: boolean | null = null,
  signal?: AbortSignal,
): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    out: (s) => void (stdout += s),
    err: (s) => void (stderr += s),
    errIsTty: false,
    env,
    confirm: async () => confirm,
    ...(signal ? { signal } : {}),
  };
  const code = await run(argv, io);
  return { code, stdout, stderr };
}

const ajv = new Ajv2020({ allErrors: true, strict: true });

/** Parse `stdout` as the JSON of `command` and check it against the command's schema. */
export function validJson(command: string, stdout: string): Record<string, unknown> {
  const doc = JSON.parse(stdout) as Record<string, unknown>;
  const validate = ajv.getSchema(`vfio-bridge/${command}/1`) ?? ajv.compile(SCHEMAS[command]);
  if (!validate(doc))
    throw new Error(`${command} --json breaks its schema: ${ajv.errorsText(validate.errors)}`);
  return doc;
}
