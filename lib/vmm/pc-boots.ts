/**
 * The boots of a PcMachine: what firmware does before each (BAR placement), each boot's set-up
 * (pc-boot.ts), and the reset between two boots (every device reset, the board's own devices back
 * to power-on, guest RAM cleared). Each step has a synchronous form and one that leaves the event
 * loop a turn between its pieces, with the reset ioctls on the libuv thread pool.
 */
import { runStepsAsync } from '../base/steps';
import { transaction } from '../memory';
import type { VfioPciDevice } from '../pci';
import { DEFAULT_PCI_WINDOWS, placeBars, placeBarsSteps, type PlacedBar } from './bar-placement';
import { pciIntxGsi } from './intx';
import {
  bootSteps,
  loadBootImages,
  loadBootImagesSteps,
  startBoot,
  type Boot,
  type BootContext,
} from './pc-boot';

/**
 * Guest RAM cleared per turn of the event loop at a reboot: a few ms of memset each, in place
 * (GuestRam.fill), so no window of it is made or kept.
 */
const CLEAR_CHUNK = 16 * 2 ** 20;

/** What the boots are built from: a boot's context without the per-boot parts. */
export interface PcBootsContext extends Omit<BootContext, 'cmdline' | 'routing'> {
  /** Where the next boot's exits go (a fresh routing per boot). */
  routing(): BootContext['routing'];
  /** The board's own devices (host bridge, UART) back to their power-on state. */
  resetBoard(): void;
}

export class PcBoots {
  readonly #ctx: PcBootsContext;
  #cmdline: string;
  #bars: PlacedBar[] = [];
  #boot: Boot | null = null;
  #count = 0;

  constructor(ctx: PcBootsContext, cmdline: string) {
    this.#ctx = ctx;
    this.#cmdline = cmdline;
  }

  /** The current boot, or null before the first and after a reboot that failed. */
  get current(): Boot | null {
    return this.#boot;
  }

  /** The BARs as firmware placed them at the last boot. */
  get bars(): readonly PlacedBar[] {
    return this.#bars;
  }

  /** How many boots were set up. */
  get count(): number {
    return this.#count;
  }

  /** Firmware, then the first boot. */
  first(): void {
    this.#firmware();
    const ctx = this.#context();
    this.#start(startBoot(ctx, loadBootImages(ctx)));
  }

  /** {@link first} with `turn()` awaited between the steps. */
  async firstAsync(turn: () => Promise<void>): Promise<void> {
    const plan = await runStepsAsync(
      placeBarsSteps(this.#ctx.host, DEFAULT_PCI_WINDOWS, { intxGsi: pciIntxGsi }),
      turn,
    );
    // Decode on a device at a time, then each BAR moved to its place: each BAR mapped (DMA, KVM
    // slots, the exit table) in a turn.
    for (const enable of plan.enableSteps) {
      transaction(enable);
      await turn();
    }
    this.#bars = plan.placed;
    const ctx = this.#context();
    const layout = await runStepsAsync(loadBootImagesSteps(ctx), turn);
    await turn();
    // The VM is made on the thread pool; the steps own it from their first (they close it if cut short).
    const vm = await ctx.kvm.createVmAsync();
    this.#start(await runStepsAsync(bootSteps(ctx, layout, vm), turn));
  }

  /** Close the current boot: its vCPU threads first, then its VM. */
  close(): void {
    const old = this.#boot;
    this.#boot = null;
    old?.close();
  }

  /** {@link close} with `turn()` awaited between its steps. */
  async closeAsync(turn: () => Promise<void>): Promise<void> {
    const old = this.#boot;
    this.#boot = null;
    await old?.closeAsync(turn);
  }

  /**
   * A PC's reset and the next boot: the current boot closed, every device reset
   * (`VfioPciDevice.reset('guest')`), the board reset, guest RAM cleared, BARs placed again and
   * Linux loaded again (with `cmdline` if given).
   */
  restart(cmdline?: string): void {
    this.#beginRestart(cmdline);
    for (const d of this.#devices()) this.#resetDevice(d, () => d.reset('guest'));
    this.#ctx.resetBoard();
    const ram = this.#ctx.machine.ram;
    ram.fill(0, ram.length);
    this.first();
  }

  /** {@link restart} off the event loop: resets on the thread pool, RAM cleared in pieces, `turn()` between. */
  async restartAsync(cmdline: string | undefined, turn: () => Promise<void>): Promise<void> {
    await this.closeAsync(turn);
    if (cmdline !== undefined) this.#cmdline = cmdline;
    for (const d of this.#devices()) {
      let failure: unknown;
      await d.resetAsync('guest').catch((e: unknown) => (failure = e));
      this.#resetDevice(d, () => {
        if (failure !== undefined) throw failure;
      });
      await turn();
    }
    this.#ctx.resetBoard();
    const ram = this.#ctx.machine.ram;
    for (let at = 0; at < ram.length; at += CLEAR_CHUNK) {
      ram.fill(at, Math.min(CLEAR_CHUNK, ram.length - at));
      await turn();
    }
    await this.firstAsync(turn);
  }

  #beginRestart(cmdline: string | undefined): void {
    this.close();
    if (cmdline !== undefined) this.#cmdline = cmdline;
  }

  #devices(): VfioPciDevice[] {
    return this.#ctx.routed.map((r) => r.dev);
  }

  /**
   * Reset one device with `reset`. As QEMU: a device with no reset method (ENORESET) still has its
   * guest-visible state reset, and the machine boots on; its driver resets the chip when it probes.
   */
  #resetDevice(d: VfioPciDevice, reset: () => void): void {
    try {
      reset();
    } catch (error) {
      if ((error as { code?: string }).code !== 'ENORESET') throw error;
      this.#ctx.report({ kind: 'reset', bdf: d.bdf, error: error as Error });
    }
  }

  /** BAR placement as firmware does it (writing each INTx line), seen by listeners as one change. */
  #firmware(): void {
    transaction(() => {
      this.#bars = placeBars(this.#ctx.host, DEFAULT_PCI_WINDOWS, { intxGsi: pciIntxGsi });
    });
  }

  #start(boot: Boot): void {
    this.#boot = boot;
    this.#count++;
  }

  #context(): BootContext {
    const { resetBoard: _reset, routing, ...ctx } = this.#ctx;
    return { ...ctx, cmdline: this.#cmdline, routing: routing() };
  }
}
