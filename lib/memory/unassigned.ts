/**
 * What an address space says about a guest access that no region took or that a region refused:
 * the reason, the record it emits, and its events.
 */

/** Why an access was not delivered to a region. */
export type UnassignedReason =
  'unassigned' | 'rejected' | 'unaligned' | 'invalid-size' | 'readonly' | 'fault';

/** A guest access that reached no region, or that the region refused. */
export interface UnassignedAccess {
  /** Address in this address space where the refused piece starts (a split access reports each piece). */
  addr: number;
  /** Length of the refused piece in bytes (1 to 8). */
  size: number;
  /** True for a write (dropped), false for a read (answered with all-ones). */
  isWrite: boolean;
  /**
   * `unassigned` (nothing there), `rejected`/`unaligned`/`invalid-size` (the io region's `valid`
   * rules), `readonly`, or `fault` (the ram-device memory threw, e.g. a revoked BAR mapping).
   */
  reason: UnassignedReason;
  /** Name of the region that refused it, if any. */
  region?: string;
  /** With `fault`: what the device memory threw. */
  error?: unknown;
}

/** The events of an `AddressSpace`. */
export type AddressSpaceEvents = {
  /**
   * An access no region took, or one a region refused (see {@link UnassignedAccess}).
   * @deprecated listen to the sink's `guest-error` (`AddressSpace.guestErrors`) instead: the same
   *   report is the `detail` of a `memory` guest error
   */
  unassigned: [UnassignedAccess];
};
