/**
 * How the lab fails. A bad device spec or option is a UsageError (exit 2) raised by the CLI; what
 * goes wrong after that is a {@link LabError}, whose exit status tells a caller what kind of
 * failure it was, so that a script can tell the lab's failure from the command's own status.
 */
import { VfioBridgeError } from '../../base/error';

/** Exit status: the host lacks something only an administrator can add (QEMU, busybox, a kernel). */
export const EXIT_UNPROVISIONABLE = 3;
/** Exit status: the guest or the command outlived --timeout (as timeout(1) reports it). */
export const EXIT_TIMEOUT = 124;
/** Exit status: the guest stopped running (EX_TEMPFAIL: nothing was decided, run it again). */
export const EXIT_STALLED = 75;

/**
 * LabError codes:
 * - `'ELABPROVISION'`: the host cannot provide QEMU, a static busybox or a usable kernel (exit 3);
 * - `'ELABKERNEL'`: the kernel asked for lacks a module or feature the lab needs, or a module the user named;
 * - `'ELABGUEST'`: the guest's init reported a failure (a module, a device, a mount);
 * - `'ELABBOOT'`: the guest never reached its init, or the command never reported its status;
 * - `'ETIMEDOUT'`: --timeout ran out (exit 124);
 * - `'ELABSTALL'`: the guest stopped running while the command ran (QEMU idle, no timer firing in
 *   the guest): a hang below the command, with the monitor's picture of its CPUs (exit 75);
 * - `'ELABLOCK'`: another lab guest held the machine for longer than --lock-wait;
 * - an errno name: a file or a tool the lab runs failed.
 */
export class LabError extends VfioBridgeError {
  override readonly name: string = 'LabError';
  /** The exit status the CLI ends with. */
  readonly exitStatus: number;

  constructor(init: { message: string; code: string; hint?: string; cause?: unknown; exitStatus?: number }) {
    super(init);
    this.exitStatus = init.exitStatus ?? 1;
  }
}

/** The host cannot run the lab until someone installs `what`: exit 3, and the fix as the hint. */
export function unprovisionable(why: string, fix: string): LabError {
  return new LabError({
    message: `cannot provision the lab: ${why}`,
    code: 'ELABPROVISION',
    hint: fix,
    exitStatus: EXIT_UNPROVISIONABLE,
  });
}
