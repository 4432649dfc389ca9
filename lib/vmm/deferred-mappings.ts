import { Outstanding } from '../base/outstanding';
import { turn } from '../base/steps';

/**
 * The region changes guest config writes hand over (VfioPciDevice.deferMappings), each run a turn
 * of the event loop after its write, and a promise of them for the vCPU that wrote: while the guest
 * runs, a decode toggle holds the loop once for the write to the device and once, a turn later, for
 * the flat views and their listeners, instead of for both at once. The vCPU waits for both, as it
 * waits in QEMU for the whole write; what it wrote is in force when it runs on.
 * @internal
 */
export class DeferredMappings {
  readonly #onError: (error: unknown) => void;
  readonly #outstanding = new Outstanding();
  #dropped = false;

  /** `onError`: what an update threw (a memory listener's failure); the others still run. */
  constructor(onError: (error: unknown) => void) {
    this.#onError = onError;
  }

  /** What a device takes as its `deferMappings`. */
  readonly schedule = (update: () => void): void => {
    const done = this.#outstanding.begin();
    void turn().then(() => {
      try {
        if (!this.#dropped) update();
      } catch (e) {
        this.#onError(e);
      } finally {
        done();
      }
    });
  };

  /** Resolves once every update handed over so far has run; null when none waits. */
  get pending(): Promise<void> | null {
    return this.#outstanding.pending;
  }

  /** From now on updates are dropped, not run: the machine is closing, and its regions go with it. */
  drop(): void {
    this.#dropped = true;
  }
}
