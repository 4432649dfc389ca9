/**
 * Events the guest causes are delivered through `node:events` (so `events.once`, `events.on` and
 * async iteration work on every emitter of the package), but never as exceptions: a listener that
 * throws must not turn a guest access into a VMM exception, nor keep the other listeners from
 * hearing it. Loads without the addon (lib/memory uses it).
 */
import type { EventEmitter } from 'node:events';

/**
 * Call every listener of `event` with `args`, each on its own: one that throws is handed to
 * `onThrow` and the rest still run. Once-listeners are removed as `emit` removes them. Returns
 * whether there was a listener.
 */
export function emitGuarded(
  emitter: EventEmitter,
  event: string,
  args: readonly unknown[],
  onThrow: (error: unknown) => void,
): boolean {
  const listeners = emitter.rawListeners(event) as ((...a: unknown[]) => void)[];
  for (const l of listeners) {
    try {
      l.apply(emitter, args as unknown[]);
    } catch (e) {
      onThrow(e);
    }
  }
  return listeners.length > 0;
}

/**
 * Call `fn(...args)` where a throw has nowhere to go (a promise callback, where it would be an
 * unhandled rejection and end what waits on the callback): one that throws becomes a process
 * warning (`VFIO_BRIDGE_LISTENER_THREW`) naming `what`.
 */
export function callWarning<A extends unknown[]>(what: string, fn: (...args: A) => void, ...args: A): void {
  try {
    fn(...args);
  } catch (e) {
    process.emitWarning(`${what} threw: ${String(e)}`, { code: 'VFIO_BRIDGE_LISTENER_THREW' });
  }
}
