import { ArgRangeError, ArgTypeError } from '../base/error';
import type { HotResetInfo } from '../vfio';
import type { PciCapability } from './config';
import {
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_COMMAND_IO,
} from './constants';
import type { PciInterrupts } from './interrupts';
import { isVfioError } from './report';
import type { VfioDeviceLike } from './types';

/**
 * How {@link VfioPciDevice.reset} treats what the guest sees:
 * - `'guest'`: a reset the guest asked for or a system reset, as QEMU does it: BARs unplaced,
 *   decode and bus master off, MSI and MSI-X disabled, every emulated register at its reset value;
 * - `'recover'`: the VMM recovers a wedged device behind the guest's back: the device is reset and
 *   the guest-visible state this layer virtualizes (BAR placement, command register, MSI/MSI-X setup
 *   and masks) is put back, so the guest sees no change in configuration space.
 */
export type PciResetMode = 'guest' | 'recover';

/** Which reset ran: function-level, a bus (hot) reset, a PM (D3hot) reset, or the kernel's choice. */
export type PciResetMethod = 'flr' | 'hot' | 'pm' | 'device';

/** The reset ioctls, as lib/vfio's Device offers them (the promise forms run on the thread pool). */
export interface ResettableDevice extends VfioDeviceLike {
  /** Whether the device has a function reset (see {@link Device.info}). */
  info(): {
    /** Whether the device has a function reset (VFIO_DEVICE_FLAGS_RESET). */
    reset: boolean;
  };
  /** See {@link Device.reset}. */
  reset(): void;
  /** See {@link Device.hotResetInfo}. */
  hotResetInfo(): HotResetInfo;
  /** See {@link Device.hotReset}. */
  hotReset(): void;
  /** See {@link Device.resetAsync}. */
  resetAsync?(): Promise<void>;
  /** See {@link Device.hotResetAsync}. */
  hotResetAsync?(): Promise<void>;
}

/**
 * A kernel call a reset makes. The steps of a reset yield them; the synchronous reset makes each
 * call at once, the asynchronous one awaits its promise form, so both take the same decisions.
 */
type ResetCall = 'reset' | 'hotReset';

/** What the device gives the reset. @internal */
export interface PciResetContext {
  readonly bdf: string;
  readonly device: VfioDeviceLike;
  readonly capabilities: readonly PciCapability[];
  readonly irq: PciInterrupts;
  /** The command register as the guest last wrote it. */
  command(): number;
  /** One guest config write (the full virtualization path). */
  configWrite(offset: number, size: 1 | 2 | 4, value: number): void;
  /** One write of the device's own config space, bypassing the emulation. */
  physWrite(offset: number, size: 1 | 2 | 4, value: number): void;
  phys(offset: number, size: 1 | 2 | 4): number;
  /** Puts every emulated register back to its value after open. */
  restoreEmulated(): void;
}

/** Command bits a PCI reset clears (the writable ones of QEMU's pci_do_device_reset). */
const COMMAND_RESET_MASK = 0x07ff;
const CAP_PM = 0x01;
const CAP_EXP = 0x10;
const CAP_AF = 0x13;
const PCI_PM_CTRL = 4;
const PCI_PM_CTRL_NO_SOFT_RESET = 0x0008;
const PCI_EXP_DEVCAP = 4;
const PCI_EXP_DEVCAP_FLR = 0x1000_0000;
const PCI_AF_CAP = 3;
const PCI_AF_CAP_FLR = 0x02;
const PCI_AF_CAP_TP = 0x01;

function isResettable(d: VfioDeviceLike): d is ResettableDevice {
  const x = d as Partial<ResettableDevice>;
  return typeof x.reset === 'function' && typeof x.info === 'function' && typeof x.hotReset === 'function';
}

/** What the device offers, read from its capabilities as QEMU reads them. */
export function resetCapabilities(ctx: Pick<PciResetContext, 'capabilities' | 'phys'>): {
  /** The device advertises Function Level Reset (PCIe DevCap, or AF with Transactions Pending). */
  flr: boolean;
  /** A D3hot-to-D0 power-management transition resets it (PM capability, No_Soft_Reset clear). */
  pm: boolean;
} {
  let flr = false;
  let pm = false;
  for (const c of ctx.capabilities) {
    if (c.extended) continue;
    if (c.id === CAP_EXP) flr ||= ((ctx.phys(c.offset + PCI_EXP_DEVCAP, 4) >>> 0) & PCI_EXP_DEVCAP_FLR) !== 0;
    if (c.id === CAP_AF) {
      const af = ctx.phys(c.offset + PCI_AF_CAP, 1);
      flr ||= (af & PCI_AF_CAP_FLR) !== 0 && (af & PCI_AF_CAP_TP) !== 0;
    }
    if (c.id === CAP_PM) pm = (ctx.phys(c.offset + PCI_PM_CTRL, 2) & PCI_PM_CTRL_NO_SOFT_RESET) === 0;
  }
  return { flr, pm };
}

function noReset(bdf: string, why: string, cause?: Error): Error {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { VfioError } = require('../vfio') as typeof import('../vfio');
  return new VfioError({
    message: `${bdf}: no reset method worked: ${why}${cause ? ` (${cause.message.split('\n')[0]})` : ''}`,
    code: 'ENORESET',
    op: 'VfioPciDevice.reset',
    bdf,
    hint:
      'the device has no function reset, and a hot reset needs every device on its bus in groups this ' +
      'process owns (see Device.hotResetInfo())',
  });
}

/** Picks and runs the reset method in QEMU's order: function reset, then hot reset, then PM reset. */
function* runReset(ctx: PciResetContext, d: ResettableDevice): Generator<ResetCall, PciResetMethod> {
  const works = d.info().reset;
  const { flr, pm } = resetCapabilities(ctx);
  if (works && (flr || !pm)) {
    yield 'reset';
    return flr ? 'flr' : 'device';
  }
  let hotError: Error | undefined;
  try {
    yield 'hotReset';
    return 'hot';
  } catch (e) {
    if (!isVfioError(e)) throw e;
    hotError = e;
  }
  if (works) {
    yield 'reset';
    return 'pm';
  }
  throw noReset(ctx.bdf, 'no function or PM reset, and the hot reset failed', hotError);
}

/**
 * resetPciDevice: QEMU's device reset (vfio_pci_reset): host interrupts and decode/bus master off,
 * the reset method, then the guest-visible state as `mode` asks. Mappings of the BARs fault while the
 * reset runs; accesses through the bus in that time are reported `fault`s.
 * @throws VfioError `'ENORESET'` when no method works (the guest-visible state is still restored)
 */
export function resetPciDevice(ctx: PciResetContext, mode: PciResetMode): PciResetMethod {
  const d = resettable(ctx, mode);
  const steps = resetSteps(ctx, d, mode);
  let step = steps.next();
  while (!step.done) {
    try {
      d[step.value]();
      step = steps.next();
    } catch (e) {
      step = steps.throw(e);
    }
  }
  return step.value;
}

/**
 * {@link resetPciDevice} with the reset ioctls on the libuv thread pool where the device offers
 * them (a function reset waits 100 ms and more, a bus reset a second), so the event loop runs
 * meanwhile.
 */
export async function resetPciDeviceAsync(ctx: PciResetContext, mode: PciResetMode): Promise<PciResetMethod> {
  const d = resettable(ctx, mode);
  const steps = resetSteps(ctx, d, mode);
  let step = steps.next();
  while (!step.done) {
    try {
      const call = step.value;
      if (call === 'reset') await (d.resetAsync !== undefined ? d.resetAsync() : d.reset());
      else await (d.hotResetAsync !== undefined ? d.hotResetAsync() : d.hotReset());
      step = steps.next();
    } catch (e) {
      step = steps.throw(e);
    }
  }
  return step.value;
}

function resettable(ctx: PciResetContext, mode: PciResetMode): ResettableDevice {
  if (mode !== 'guest' && mode !== 'recover') {
    throw new ArgRangeError(`reset mode must be 'guest' or 'recover', got ${String(mode)}`);
  }
  const d = ctx.device;
  if (!isResettable(d)) throw new ArgTypeError(`${ctx.bdf}: the device does not offer VFIO resets`);
  return d;
}

/** The reset around its method: the device quiet first, the guest-visible state after. */
function* resetSteps(
  ctx: PciResetContext,
  d: ResettableDevice,
  mode: PciResetMode,
): Generator<ResetCall, PciResetMethod> {
  const guestCommand = ctx.command();
  ctx.irq.suspend();
  const quiet =
    guestCommand & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE);
  if (mode === 'guest') ctx.configWrite(PCI_COMMAND, 2, quiet);
  else ctx.physWrite(PCI_COMMAND, 2, quiet);
  let method: PciResetMethod | undefined;
  let failure: unknown;
  try {
    method = yield* runReset(ctx, d);
  } catch (e) {
    failure = e;
  }
  if (mode === 'guest') {
    ctx.restoreEmulated();
    ctx.irq.resetState();
    ctx.configWrite(PCI_COMMAND, 2, quiet & ~COMMAND_RESET_MASK);
  } else {
    ctx.physWrite(PCI_COMMAND, 2, guestCommand);
    ctx.irq.resume();
  }
  if (failure !== undefined) throw failure;
  return method!;
}
