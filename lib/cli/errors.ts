/**
 * How the CLI fails: a usage error (exit 2) for anything wrong with the command line, a VfioError
 * (exit 1) for an operation that failed, with its message and hint on stderr.
 */
import { VfioError } from '../vfio/errors';

/** Exit codes, the same for every command. */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

/** A bad command line: a malformed BDF, a width that is not 1/2/4/8, an offset past the region. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly hint: string | undefined;
  constructor(message: string, hint?: string) {
    super(message);
    this.hint = hint;
  }
}

/** The exit code and the stderr text for an error a command threw. */
export function describeFailure(e: unknown): { code: number; text: string } {
  if (e instanceof UsageError) {
    return { code: EXIT_USAGE, text: e.message + (e.hint ? `\n  hint: ${e.hint}` : '') };
  }
  // The library throws RangeError and TypeError only for arguments it cannot take, which on a
  // command line are the operator's: report them as usage errors too.
  if (e instanceof RangeError || e instanceof TypeError) return { code: EXIT_USAGE, text: e.message };
  if (e instanceof VfioError) return { code: EXIT_FAILED, text: `${e.message} [${e.code}]` };
  if (e instanceof Error) return { code: EXIT_FAILED, text: e.message };
  return { code: EXIT_FAILED, text: String(e) };
}
