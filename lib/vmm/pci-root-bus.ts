import { ArgRangeError, ArgTypeError } from '../base/error';
import { allOnes32 } from '../base/values';
import { MemoryRegion } from '../memory';

/** The first port of configuration mechanism #1: CONFIG_ADDRESS at 0xcf8, CONFIG_DATA at 0xcfc. */
export const PCI_CONFIG_PORT = 0xcf8;
/** The chipset's reset control register (PIIX/ICH9), inside the mechanism's 8 ports. */
export const RESET_CONTROL_PORT = 0xcf9;

const CONFIG_ENABLE = 0x80000000;
/** Reset control: bit 1 chooses a full system reset, bit 2 starts it (Linux's reboot=pci writes 0x06 then 0x0e). */
const RCR_SYS_RST = 0x02;
const RCR_RST_CPU = 0x04;

/** What a PCI function must offer to sit on the host bridge: config space accesses. */
export interface PciConfigTarget {
  /** A configuration read of `size` bytes at `offset`. */
  configRead(offset: number, size: 1 | 2 | 4): number;
  /** A configuration write. */
  configWrite(offset: number, size: 1 | 2 | 4, value: number): void;
}

/** Options of {@link PciRootBus}. */
export interface PciRootBusOptions {
  /** Host bridge vendor ID (default 0x1b36, Red Hat, which has no Linux quirks to trip). */
  vendorId?: number;
  /** Host bridge device ID (default 0x0008, QEMU's generic PCIe host bridge). */
  deviceId?: number;
  /** Called when the guest asks for a reset through the reset control register at 0xcf9. */
  onReset?: () => void;
}

/** Counts of config cycles the host bridge served, per kind. */
export interface PciRootBusStats {
  /** Config cycles to a function that is present (the host bridge or an attached one). */
  readonly cycles: number;
  /** Config cycles to a bus, device or function that is absent (read all-ones, write dropped). */
  readonly absent: number;
  /** Config data accesses while CONFIG_ADDRESS had its enable bit clear. */
  readonly disabled: number;
  /** Accesses to 0xcf8-0xcfb other than a 32-bit one at 0xcf8 or a byte at 0xcf9 (ignored, as a PC does). */
  readonly ignored: number;
}

/**
 * PciRootBus: bus 0 of a PC's PCI, reached through configuration mechanism #1 (ports
 * 0xcf8-0xcff), with a host bridge of its own at 00:00.0 and any {@link PciConfigTarget} (such as a
 * `VfioPciDevice`) attached at a device/function number.
 *
 * As on a PC and in QEMU's pci_host: CONFIG_ADDRESS latches only a 32-bit write at 0xcf8 and
 * returns the latched value only to a 32-bit read; CONFIG_DATA at 0xcfc-0xcff takes 1-, 2- and
 * 4-byte accesses, the register being CONFIG_ADDRESS bits 7:2 plus the port's low two bits. Cycles to
 * an absent function or another bus read all-ones and drop writes, which is how the guest enumerates;
 * they are counted, not reported as errors. The byte at 0xcf9 is the chipset's reset control
 * register. The host bridge's own header is read-only except the command register's decode bits,
 * the cache line size, the latency timer and the interrupt line, as firmware expects.
 */
export class PciRootBus {
  #address = 0;
  #functions = new Map<number, PciConfigTarget>();
  #config = new Uint8Array(256);
  #writable = new Uint8Array(256);
  #resetControl = 0;
  readonly #onReset?: () => void;
  #stats = { cycles: 0, absent: 0, disabled: 0, ignored: 0 };

  constructor(opts: PciRootBusOptions = {}) {
    const vendor = opts.vendorId ?? 0x1b36;
    const device = opts.deviceId ?? 0x0008;
    checkU16(vendor, 'host bridge vendor ID');
    checkU16(device, 'host bridge device ID');
    if (opts.onReset !== undefined && typeof opts.onReset !== 'function') {
      throw new ArgTypeError('PciRootBus onReset must be a function');
    }
    this.#onReset = opts.onReset;
    const c = new DataView(this.#config.buffer);
    c.setUint16(0x00, vendor, true);
    c.setUint16(0x02, device, true);
    c.setUint16(0x06, 0, true); // status: no capabilities list
    c.setUint8(0x08, 0); // revision
    c.setUint8(0x0b, 0x06); // class: bridge
    c.setUint8(0x0a, 0x00); // subclass: host bridge (Linux's type 1 sanity check looks for it)
    c.setUint16(0x2c, vendor, true);
    c.setUint16(0x2e, 0x1100, true); // subsystem: QEMU's
    this.#writable[0x04] = 0x47; // I/O, memory, bus master, parity error response
    this.#writable[0x05] = 0x01; // SERR enable
    this.#writable[0x0c] = 0xff; // cache line size
    this.#writable[0x0d] = 0xff; // latency timer
    this.#writable[0x3c] = 0xff; // interrupt line
  }

  /** Counts of what the bridge has served since creation. */
  get stats(): PciRootBusStats {
    return { ...this.#stats };
  }

  /** The reset control register as the guest last wrote it. */
  get resetControl(): number {
    return this.#resetControl;
  }

  /** The latched CONFIG_ADDRESS. */
  get configAddress(): number {
    return this.#address;
  }

  /**
   * attach: puts `target` at device `slot`, function `fn` of bus 0. Slot 0 function 0 is the host
   * bridge itself; a taken devfn is refused (a RangeError: this is the VMM's mistake, not the guest's).
   */
  attach(slot: number, fn: number, target: PciConfigTarget): void {
    const devfn = checkDevfn(slot, fn);
    if (devfn === 0) throw new ArgRangeError('PCI 00:00.0 is the host bridge');
    if (this.#functions.has(devfn)) throw new ArgRangeError(`PCI 00:${bdfTail(slot, fn)} is already taken`);
    if (!target || typeof target.configRead !== 'function' || typeof target.configWrite !== 'function') {
      throw new ArgTypeError('a PCI function needs configRead and configWrite');
    }
    this.#functions.set(devfn, target);
  }

  /** Removes the function at `slot`.`fn`; returns whether there was one. */
  detach(slot: number, fn: number): boolean {
    return this.#functions.delete(checkDevfn(slot, fn));
  }

  /** The function at `slot`.`fn` (the host bridge's own for 0.0), or undefined. */
  function(slot: number, fn: number): PciConfigTarget | undefined {
    const devfn = checkDevfn(slot, fn);
    return devfn === 0 ? this.#self : this.#functions.get(devfn);
  }

  /** Every attached function with its slot and function number, in devfn order. */
  functions(): {
    /** Device number on bus 0, 0 to 31 (00:00.0, the host bridge itself, is not listed). */
    slot: number;
    /** Function number, 0 to 7. */
    fn: number;
    /** What answers the function's configuration cycles. */
    target: PciConfigTarget;
  }[] {
    return [...this.#functions.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([devfn, target]) => ({ slot: devfn >> 3, fn: devfn & 7, target }));
  }

  /** An 8-port I/O region for {@link PCI_CONFIG_PORT} in the VMM's port space. */
  region(name = 'pci-conf'): MemoryRegion {
    return MemoryRegion.io(name, 8, {
      read: (offset, size) => this.read(offset, size as 1 | 2 | 4),
      write: (offset, size, value) => this.write(offset, size as 1 | 2 | 4, Number(value)),
      valid: { minAccessSize: 1, maxAccessSize: 4 },
      impl: { minAccessSize: 1, maxAccessSize: 4 },
    });
  }

  /** One guest read at port 0xcf8 + `offset` (0-7), aligned to its size. */
  read(offset: number, size: 1 | 2 | 4): number {
    checkPortAccess(offset, size);
    if (offset < 4) {
      if (offset === 0 && size === 4) return this.#address >>> 0;
      if (offset === 1 && size === 1) return this.#resetControl;
      this.#stats.ignored++;
      return allOnes32(size);
    }
    const target = this.#decode();
    if (target === null) return allOnes32(size);
    return target.t.configRead(target.reg + (offset & 3), size);
  }

  /** One guest write at port 0xcf8 + `offset` (0-7), aligned to its size. */
  write(offset: number, size: 1 | 2 | 4, value: number): void {
    checkPortAccess(offset, size);
    if (!Number.isInteger(value) || value < 0 || value > allOnes32(size)) {
      throw new ArgRangeError(`value ${String(value)} does not fit a ${size}-byte port write`);
    }
    if (offset < 4) {
      if (offset === 0 && size === 4) this.#address = value >>> 0;
      else if (offset === 1 && size === 1) this.#writeResetControl(value);
      else this.#stats.ignored++;
      return;
    }
    const target = this.#decode();
    if (target === null) return;
    target.t.configWrite(target.reg + (offset & 3), size, value);
  }

  /** Power-on state: CONFIG_ADDRESS and the reset control register cleared, host bridge writes undone. */
  reset(): void {
    this.#address = 0;
    this.#resetControl = 0;
    for (const off of [0x04, 0x05, 0x0c, 0x0d, 0x3c]) this.#config[off] = 0;
  }

  #decode(): { t: PciConfigTarget; reg: number } | null {
    const a = this.#address;
    if (!(a & CONFIG_ENABLE)) {
      this.#stats.disabled++;
      return null;
    }
    const bus = (a >>> 16) & 0xff;
    const devfn = (a >>> 8) & 0xff;
    const t = bus !== 0 ? undefined : devfn === 0 ? this.#self : this.#functions.get(devfn);
    if (t === undefined) {
      this.#stats.absent++;
      return null;
    }
    this.#stats.cycles++;
    return { t, reg: a & 0xfc };
  }

  #writeResetControl(v: number): void {
    // Only the start bit's rising edge resets, as ICH9's RCR does; the rest is stored.
    const start = v & RCR_RST_CPU && !(this.#resetControl & RCR_RST_CPU);
    this.#resetControl = v & (RCR_SYS_RST | RCR_RST_CPU);
    if (start) {
      this.#resetControl &= ~RCR_RST_CPU;
      this.#onReset?.();
    }
  }

  readonly #self: PciConfigTarget = {
    configRead: (offset, size) => {
      let v = 0;
      for (let i = size - 1; i >= 0; i--) v = v * 256 + this.#config[offset + i];
      return v;
    },
    configWrite: (offset, size, value) => {
      for (let i = 0; i < size; i++) {
        const at = offset + i;
        const b = Math.floor(value / 2 ** (8 * i)) & 0xff;
        const w = this.#writable[at];
        this.#config[at] = (this.#config[at] & ~w) | (b & w);
      }
    },
  };
}

function checkPortAccess(offset: number, size: number): void {
  if (size !== 1 && size !== 2 && size !== 4)
    throw new ArgRangeError(`port access size ${size} is not 1, 2 or 4`);
  if (!Number.isInteger(offset) || offset < 0 || offset + size > 8 || offset % size !== 0) {
    throw new ArgRangeError(
      `port offset ${String(offset)} with size ${size} is not an aligned access in 0xcf8-0xcff`,
    );
  }
}

function checkDevfn(slot: number, fn: number): number {
  if (!Number.isInteger(slot) || slot < 0 || slot > 31)
    throw new ArgRangeError(`PCI slot ${String(slot)} is out of range 0..31`);
  if (!Number.isInteger(fn) || fn < 0 || fn > 7)
    throw new ArgRangeError(`PCI function ${String(fn)} is out of range 0..7`);
  return (slot << 3) | fn;
}

function checkU16(v: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff)
    throw new ArgRangeError(`${what} ${String(v)} is not a 16-bit value`);
}

function bdfTail(slot: number, fn: number): string {
  return `${slot.toString(16).padStart(2, '0')}.${fn}`;
}

/** @deprecated Renamed {@link PciRootBus}: the class is bus 0 itself, with the host bridge on it. */
export const PciHostBridge = PciRootBus;
/** @deprecated Renamed {@link PciRootBus}. */
export type PciHostBridge = PciRootBus;
/** @deprecated Renamed {@link PciRootBusOptions}. */
export type PciHostBridgeOptions = PciRootBusOptions;
/** @deprecated Renamed {@link PciRootBusStats}. */
export type PciHostStats = PciRootBusStats;
