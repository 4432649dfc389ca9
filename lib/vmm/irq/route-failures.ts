import { GuestErrorSink } from '../../base/guest-error';
import { ArgTypeError } from '../../base/error';

/** What one refused route says: where it was and the line of the report. */
export interface RouteFailure {
  /** The route's key (`BDF msi 0`, `BDF msix`, `BDF intx`): the report's `where`. */
  readonly where: string;
  /** The report's message, given KVM's first line of the error. */
  message(why: string): string;
  /** What the guest can expect now, or what to look at. */
  readonly hint: string;
}

/** What a refused route of MSI/MSI-X vector `key` says (PciMsiRouting's, and a queued MsiRoutes'). */
export function msiRouteFailure(key: string): RouteFailure {
  return {
    where: key,
    message: (why) => `KVM refused the route of ${key}: ${why}`,
    hint: "the guest's MSI message or vector setup is one KVM cannot route (or the GSI table is full)",
  };
}

/**
 * reportRouteFailure: `error`, from KVM refusing `failure`, reported to `sink` (source `irq`, kind
 * `irq-route-failed`, action `ignored`); `device` is the BDF the report names, if one does.
 */
export function reportRouteFailure(
  sink: GuestErrorSink,
  device: string | undefined,
  failure: RouteFailure,
  e: unknown,
): void {
  const error = e instanceof Error ? e : new Error(String(e));
  sink.report({
    source: 'irq',
    kind: 'irq-route-failed',
    ...(device !== undefined ? { device } : {}),
    where: failure.where,
    action: 'ignored',
    message: failure.message(error.message.split('\n')[0]!),
    hint: failure.hint,
    error,
  });
}

/**
 * The guard the interrupt routings of one device put around every call into KVM: a refusal is
 * counted and reported to the sink (source `irq`, kind `irq-route-failed`, action `ignored`),
 * never thrown, because the guest's setup caused it and the guest access that did must go on.
 */
export class RouteFailures {
  readonly #sink: GuestErrorSink;
  readonly #device: string;
  #count = 0;

  /**
   * `device` is the BDF the reports name; `sink` the one given in the options (checked here),
   * else the device's own, else a new one.
   * @throws TypeError when `given` is not a GuestErrorSink
   */
  constructor(device: string, given: unknown, deviceSink: GuestErrorSink | undefined) {
    if (given !== undefined && !(given instanceof GuestErrorSink)) {
      throw new ArgTypeError('guestErrors must be a GuestErrorSink');
    }
    this.#device = device;
    this.#sink = given ?? deviceSink ?? new GuestErrorSink();
  }

  /** Refusals reported so far. */
  get count(): number {
    return this.#count;
  }

  /** Runs `fn`; true when it returned, false when it threw and the throw was reported. */
  run(failure: RouteFailure, fn: () => void): boolean {
    try {
      fn();
      return true;
    } catch (e) {
      this.#count++;
      reportRouteFailure(this.#sink, this.#device, failure, e);
      return false;
    }
  }
}
