/**
 * What a test must not leave behind on a device: bus mastering on (it could still write to memory
 * that is about to be unmapped or handed back to the host), MSI or MSI-X enabled, or a power state
 * other than D0. Read from config space as the device's VFIO config region (index 7) shows it,
 * which is what vfio-pci makes of it: some bits come from the device, some are virtualized and
 * show what the user of the device fd last wrote.
 */
import { VfioBridgeError } from '../base/error';
import { walkCapabilities } from '../pci/config';
import {
  PCI_CAP_ID_MSI,
  PCI_CAP_ID_MSIX,
  PCI_CAP_ID_PM,
  PCI_COMMAND,
  PCI_COMMAND_MASTER,
  PCI_CONFIG_SPACE_SIZE,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_ENABLE,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_PM_CTRL,
} from '../pci/constants';

/** One byte-wide-or-wider read of config space. */
export type ConfigRead = (offset: number, size: 1 | 2 | 4) => number;

/** One thing left on, with where it shows. */
export interface LeftBusyFinding {
  /** The register, as the message names it: `PCI_COMMAND`, `MSI control`, `MSI-X control`, `PMCSR`. */
  register: string;
  /** Its config space offset. */
  offset: number;
  /** The value read. */
  value: number;
  /** What is wrong, e.g. `bus mastering is on (bit 2)`. */
  problem: string;
}

const PCI_PM_CTRL_STATE_MASK = 0x3;

const hex = (v: number, digits = 2): string => `0x${v.toString(16).padStart(digits, '0')}`;

/** The standard capabilities, id to offset (the first of each id), as lib/pci walks them. */
function capabilities(read: ConfigRead): Map<number, number> {
  const caps = new Map<number, number>();
  for (const c of walkCapabilities(read, PCI_CONFIG_SPACE_SIZE))
    if (!caps.has(c.id)) caps.set(c.id, c.offset);
  return caps;
}

/** leftBusyFindings: everything a test left on, read through `read`; empty when the device is idle. */
export function leftBusyFindings(read: ConfigRead): LeftBusyFinding[] {
  const out: LeftBusyFinding[] = [];
  const cmd = read(PCI_COMMAND, 2);
  if (cmd & PCI_COMMAND_MASTER) {
    out.push({
      register: 'PCI_COMMAND',
      offset: PCI_COMMAND,
      value: cmd,
      problem: 'bus mastering is on (bit 2)',
    });
  }
  const caps = capabilities(read);
  const msi = caps.get(PCI_CAP_ID_MSI);
  if (msi !== undefined) {
    const v = read(msi + PCI_MSI_FLAGS, 2);
    if (v & PCI_MSI_FLAGS_ENABLE) {
      out.push({
        register: 'MSI control',
        offset: msi + PCI_MSI_FLAGS,
        value: v,
        problem: 'MSI is enabled (bit 0)',
      });
    }
  }
  const msix = caps.get(PCI_CAP_ID_MSIX);
  if (msix !== undefined) {
    const v = read(msix + PCI_MSIX_FLAGS, 2);
    if (v & PCI_MSIX_FLAGS_ENABLE) {
      out.push({
        register: 'MSI-X control',
        offset: msix + PCI_MSIX_FLAGS,
        value: v,
        problem: 'MSI-X is enabled (bit 15)',
      });
    }
  }
  const pm = caps.get(PCI_CAP_ID_PM);
  if (pm !== undefined) {
    const v = read(pm + PCI_PM_CTRL, 2);
    const state = v & PCI_PM_CTRL_STATE_MASK;
    if (state !== 0) {
      out.push({
        register: 'PMCSR',
        offset: pm + PCI_PM_CTRL,
        value: v,
        problem: `the device is in D${state === 3 ? '3hot' : state}, not D0`,
      });
    }
  }
  return out;
}

/**
 * A device a test left busy: `code` is `'ELEFTBUSY'`, the message names the device and each
 * register, `findings` lists them.
 */
export class LeftBusyError extends VfioBridgeError {
  override readonly name: string = 'LeftBusyError';
  /** PCI address of the device. */
  readonly bdf: string;
  /** Each register that shows the device busy (at least one). */
  readonly findings: readonly LeftBusyFinding[];

  constructor(bdf: string, label: string, findings: readonly LeftBusyFinding[], cause?: unknown) {
    const what = findings
      .map((f) => `${f.problem}: ${f.register} at ${hex(f.offset)} reads ${hex(f.value, 4)}`)
      .join('; ');
    super({
      message: `${label} was left busy: ${what}`,
      code: 'ELEFTBUSY',
      cause,
      hint:
        'stop the device before the test ends: clear bus mastering in PCI_COMMAND, disable MSI and ' +
        'MSI-X (close the DeviceIrq), and return it to D0; whoever uses the device next inherits the rest',
    });
    this.bdf = bdf;
    this.findings = findings;
  }
}
