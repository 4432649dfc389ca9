/**
 * How the CLI fails: a usage error (exit 2) for anything wrong with the command line, a VfioError
 * (exit 1) for an operation that failed, with its message and hint on stderr.
 */
import { VfioBridgeError } from '../base/error';
import { VfioError } from '../base/native-errors';
import { LabError } from './lab/errors';

/** Exit codes, the same for every command. */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
/** An aborted command (Ctrl-C), as a shell reports one killed by SIGINT: 128 + 2. */
export const EXIT_INTERRUPTED = 130;

/** A bad command line: a malformed BDF, a width that is not 1/2/4/8, an offset past the region. */
export class UsageError extends VfioBridgeError {
  override readonly name: string = 'UsageError';
  constructor(message: string, hint?: string) {
    super({ message, code: 'EUSAGE', hint });
  }
}

/** What {@link fileError} needs besides the error Node threw. */
export interface FileErrorInit {
  /** What went wrong, before Node's own message: `cannot read /sys/...`. */
  lead: string;
  op: string;
  path: string;
  /** What to do about it, given Node's errno name (`EACCES`, `ENOENT`, ...). */
  hint: (code: string | undefined) => string;
  bdf?: string;
}

/**
 * A failed file operation as a VfioError (exit 1) that keeps Node's errno name and number, so the
 * operator reads the path, the reason and what to do instead of a bare fs error.
 */
export function fileError(e: unknown, init: FileErrorInit): VfioError {
  const err = e as NodeJS.ErrnoException;
  return new VfioError({
    message: `${init.lead}: ${err.message}`,
    code: err.code ?? 'EIO',
    ...(typeof err.errno === 'number' ? { errno: Math.abs(err.errno) } : {}),
    op: init.op,
    path: init.path,
    ...(init.bdf !== undefined ? { bdf: init.bdf } : {}),
    hint: init.hint(err.code),
  });
}

/** What every failure reports, as text or as JSON: the message, what to do, and a stable code. */
export interface FailureReport {
  /** The exit code: {@link EXIT_USAGE} or {@link EXIT_FAILED}. */
  exit: number;
  message: string;
  hint: string | null;
  /** The errno name or vfio-bridge code (`EBUSY`, `ENOTVIABLE`), `EUSAGE` for a bad command line. */
  code: string;
}

/** The report for an error a command threw. */
export function reportFailure(e: unknown): FailureReport {
  if (e instanceof UsageError)
    return { exit: EXIT_USAGE, message: e.message, hint: e.hint ?? null, code: 'EUSAGE' };
  // The library throws RangeError and TypeError only for arguments it cannot take, which on a
  // command line are the operator's: usage errors, keeping the library's code when it has one
  // (ERR_OUT_OF_RANGE, ERR_INVALID_ARG_TYPE) so that a script can tell them apart.
  if (e instanceof RangeError || e instanceof TypeError) {
    const code = (e as { code?: unknown }).code;
    return {
      exit: EXIT_USAGE,
      message: e.message,
      hint: "see the command's arguments: vfio-bridge help <command>",
      code: typeof code === 'string' ? code : 'EUSAGE',
    };
  }
  if (e instanceof VfioBridgeError) {
    // The lab's own statuses (3: cannot provision, 75: the guest stalled, 124: timed out) keep their meaning for scripts;
    // an abort (Ctrl-C: a dump, a lab run) ends as a shell's interrupted command does.
    const exit =
      e instanceof LabError ? e.exitStatus : e.code === 'ABORT_ERR' ? EXIT_INTERRUPTED : EXIT_FAILED;
    return { exit, message: e.message, hint: e.hint ?? null, code: e.code };
  }
  if (e instanceof Error) {
    const code = (e as NodeJS.ErrnoException).code;
    return {
      exit: EXIT_FAILED,
      message: e.message,
      hint: null,
      code: typeof code === 'string' ? code : 'EFAILED',
    };
  }
  return { exit: EXIT_FAILED, message: String(e), hint: null, code: 'EFAILED' };
}

/**
 * A report as the CLI prints it on stderr, the same for every command: the message and the code
 * on one line, the hint on the next.
 */
export function formatFailure(r: FailureReport): string {
  return `vfio-bridge: ${r.message} [${r.code}]\n` + (r.hint ? `  hint: ${r.hint}\n` : '');
}

/** A report as the CLI prints it on stderr with --json: one line, `{"error":{...}}`. */
export function formatFailureJson(r: FailureReport): string {
  return JSON.stringify({ error: { message: r.message, hint: r.hint, code: r.code } }) + '\n';
}

/** The exit code and the stderr text for an error a command threw. */
export function describeFailure(e: unknown): { code: number; text: string } {
  const r = reportFailure(e);
  return {
    code: r.exit,
    text: formatFailure(r)
      .replace(/^vfio-bridge: /, '')
      .replace(/\n$/, ''),
  };
}
