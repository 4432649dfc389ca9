import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

/**
 * Run `script` (in this folder) under node without CAP_IPC_LOCK and with RLIMIT_MEMLOCK at 1 MiB,
 * where type1 counts pinned pages against the limit, and parse the JSON line it prints last.
 */
export function runWithSmallMemlock(script: string, ...args: string[]): Record<string, unknown> {
  const out = execFileSync(
    'setpriv',
    [
      '--inh-caps=-ipc_lock',
      '--bounding-set=-ipc_lock',
      'prlimit',
      '--memlock=1048576:1048576',
      process.execPath,
      path.join(__dirname, script),
      ...args,
    ],
    { encoding: 'utf8' },
  );
  return JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
}
