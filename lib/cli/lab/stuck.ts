/**
 * A lab CPU stuck at one instruction, never taking the interrupt waiting in its local APIC, while
 * QEMU runs on. Caught in the lab in two forms, both under the nested guests of the HIL suite:
 * - busy: the nested vCPU spun in queued_read_lock_slowpath on tasklist_lock (its sibling held
 *   it), the lab kernel's timer vector 236 sat requested in the local APIC for minutes and QEMU
 *   never delivered it, so the lab kernel never ran the sibling's thread again, nor anything else
 *   (an NMI from the monitor stayed pending too);
 * - halted: the lab kernel's idle loop (pv_native_safe_halt, interrupts on) with vector 236
 *   requested, and QEMU never woke the CPU for it.
 * A key press through the monitor moved it at once, both times: the keyboard controller's
 * interrupt makes QEMU look at the local APIC again, and what waited went in with it.
 *
 * So the watch samples the CPU through the monitor while the console is silent, and a CPU found
 * in the same place in three samples in a row with the same vectors waiting (and, if halted,
 * with interrupts on: a halted CPU with a deliverable interrupt waiting has been woken in every
 * healthy sample) is kicked with a key press and the kick is reported. A kick does nothing to a
 * guest that has no use for the key (the lab's console is the serial port). A CPU still stuck
 * after three kicks in a row is a stall: the run ends with the picture.
 */
import { cpuPoint, monitorCommand, pendingVectors, stallPicture, symbolIn, type Symbols } from './stall';

/** How a watch is set up. */
export interface StuckWatchOptions {
  /** QEMU's pid (for the picture). */
  pid: number;
  /** QEMU's human monitor socket. */
  monitor: string;
  /** The guest kernel's code symbols (lazySymbols), or null: to name where the CPU is stuck. */
  symbols: () => Symbols | null;
  /** Whether the run is in a phase where being stuck counts (the command running). */
  counting: () => boolean;
  /** When the console last said something (performance.now()). */
  quietSince: () => number;
  /** Seconds of a silent console before the CPU is sampled (5). */
  quietSeconds?: number;
  /** Seconds between samples (1). */
  everySeconds?: number;
  /** A kick was given: what the CPU was doing. */
  onKick: (line: string) => void;
  /** Called once, with the picture, when kicks did not move it. */
  onStuck: (picture: string[]) => void;
}

/** Samples in a row at the same place that make a CPU stuck. */
const SAMPLES = 3;
/** Kicks in a row that did not move it, after which it is a stall. */
const KICKS = 3;
/** What the kick presses: a key nothing in the lab reads. */
export const KICK = 'sendkey shift';

/** Starts watching; returns the function that stops it. */
export function watchStuck(o: StuckWatchOptions): () => void {
  let seen: string[] = [];
  /** Kicks in a row at `kickedAt` that did not move the CPU from there. */
  let kicks = 0;
  let kickedAt: string | null = null;
  let busy = false;
  let done = false;
  const sample = async (): Promise<void> => {
    const at = cpuPoint(await monitorCommand(o.monitor, 'info registers'));
    const irr = pendingVectors(await monitorCommand(o.monitor, 'info lapic'));
    if (done) return;
    const waiting = at !== null && irr.length > 0 && (!at.halted || at.interrupts);
    const where = waiting ? `${at.rip.toString(16)}${at.halted ? ' halted' : ''} ${irr.join(', ')}` : null;
    if (where !== kickedAt) kicks = 0;
    if (at === null || where === null) {
      seen = [];
      return;
    }
    seen = [...seen, where].slice(-SAMPLES);
    if (seen.length < SAMPLES || seen.some((x) => x !== where)) return;
    const symbols = o.symbols();
    const name = symbols !== null ? symbolIn(symbols, at.rip) : null;
    const line =
      `the CPU stayed ${at.halted ? 'halted ' : ''}at ${name ?? 'RIP'} ${at.rip.toString(16)} with vector ${irr.join(', ')} ` +
      `waiting in its local APIC, in ${SAMPLES} samples ${o.everySeconds ?? 1} s apart`;
    seen = [];
    if (kicks === KICKS) {
      done = true;
      clearInterval(timer);
      o.onStuck([`${line}, after ${KICKS} kicks`, ...(await stallPicture(o, true))]);
      return;
    }
    kicks++;
    kickedAt = where;
    await monitorCommand(o.monitor, KICK);
    o.onKick(`${line}: kicked it (${KICK})`);
  };
  const timer = setInterval(
    () => {
      const quiet = (performance.now() - o.quietSince()) / 1000;
      if (!o.counting() || quiet < (o.quietSeconds ?? 5)) seen = [];
      else if (!busy) {
        busy = true;
        void sample().finally(() => (busy = false));
      }
    },
    (o.everySeconds ?? 1) * 1000,
  );
  timer.unref();
  return () => {
    done = true;
    clearInterval(timer);
  };
}
