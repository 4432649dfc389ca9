/**
 * How the CLI fails: a usage error (exit 2) for anything wrong with the command line, a VfioError
 * (exit 1) for an operation that failed, with its message and hint on stderr.
 */
import { VfioBridgeError } from '../base/error';
import { VfioError } from '../base/native-errors';

/** Exit codes, the same for every command. */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

/** A bad command line: a malformed BDF, a width that is not 1/2/4/8, an offset past the region. */
export class UsageError extends VfioBridgeError {
  override readonly name: string = 'UsageError';
  constructor(message: string, hint?: string) {
    super({ message, code: 'ERR_USAGE', hint });
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

/** The exit code and the stderr text for an error a command threw. */
export function describeFailure(e: unknown): { code: number; text: string } {
  if (e instanceof UsageError) {
    return { code: EXIT_USAGE, text: e.message + (e.hint ? `\n  hint: ${e.hint}` : '') };
  }
  const withHint = (text: string, hint: string | undefined): string =>
    hint ? `${text}\n  hint: ${hint}` : text;
  // The library throws RangeError and TypeError only for arguments it cannot take, which on a
  // command line are the operator's: report them as usage errors too.
  if (e instanceof RangeError || e instanceof TypeError) return { code: EXIT_USAGE, text: e.message };
  if (e instanceof VfioBridgeError)
    return { code: EXIT_FAILED, text: withHint(`${e.message} [${e.code}]`, e.hint) };
  if (e instanceof Error) return { code: EXIT_FAILED, text: e.message };
  return { code: EXIT_FAILED, text: String(e) };
}
