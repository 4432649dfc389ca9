/**
 * Acquiring a device for a test, framework-neutral: {@link probeDevice} says, reading sysfs only,
 * whether a role can run here; {@link tryAcquire} returns `{ skip }` or `{ device }`; {@link acquire}
 * throws where tryAcquire would skip. Where devices are required (`CI=true`, or
 * `VFIO_BRIDGE_DEVICES_REQUIRED=1`), a missing device is an error, never a skip.
 *
 * A device on another driver is moved to vfio-pci with the CLI's bind (its in-use checks refuse a
 * device the host uses), recorded in the CLI's state file, so that `vfio-bridge restore` can put it
 * back if the test process dies; release puts it back itself.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { VfioBridgeError } from '../base/error';
import { bindDevices, restoreDevices } from '../cli/binding';
import type { HostUseOptions } from '../cli/host-use';
import { DriverState, statePath } from '../cli/state';
import { Container } from '../vfio/container';
import type { Device } from '../vfio/device';
import { Group } from '../vfio/group';
import { resolveRole, type DeviceSelector, type RoleOptions } from './roles';
import { TestDevice } from './test-device';

/** Options of {@link acquire}. */
export interface AcquireOptions extends RoleOptions, HostUseOptions {
  /** Aborts the acquire between its steps (bind, open); what was done is undone. */
  signal?: AbortSignal;
  /** Directory of the VFIO nodes (default `/dev/vfio`). */
  vfioDevDir?: string;
  /** Move a device on another driver to vfio-pci (default true); false skips such a device. */
  bind?: boolean;
  /** Take a device the host uses (a mounted disk, an interface with an address): see the CLI's --force. */
  force?: boolean;
  /** The CLI's state file (default: VFIO_BRIDGE_STATE, else /run/vfio-bridge/drivers.json). */
  stateFile?: string;
  /** How long a driver gets to bind or release the device (default 10000 ms). */
  timeoutMs?: number;
  /** Fail instead of skipping (default: from the environment, see {@link devicesRequired}). */
  required?: boolean;
}

/** A role that can run here: the device, its selector and current driver. */
export interface ProbedDevice {
  /** The role asked for. */
  role: string;
  /** PCI address of the device playing it. */
  bdf: string;
  /** The role's selector, as parsed. */
  selector: DeviceSelector;
  /** The device's driver now (e.g. `vfio-pci`, `e1000e`), or null when it has none. */
  driver: string | null;
  /** Always undefined: tells a probed device from `{ skip }`. */
  skip?: undefined;
}

/** {@link tryAcquire}'s answer. */
export type Acquired =
  | {
      /** The device, bound to vfio-pci and opened; release it when done. */
      device: TestDevice;
      /** Always undefined here. */
      skip?: undefined;
    }
  | {
      /** Why the role's tests cannot run here. */
      skip: string;
      /** Always undefined here. */
      device?: undefined;
    };

/** Whether a missing device fails rather than skips: `CI=true` (or 1), or `VFIO_BRIDGE_DEVICES_REQUIRED=1` (or true). */
export function devicesRequired(env: NodeJS.ProcessEnv = process.env): boolean {
  const on = (v: string | undefined): boolean => v === '1' || v === 'true';
  return on(env['CI']) || on(env['VFIO_BRIDGE_DEVICES_REQUIRED']);
}

/**
 * probeDevice: the device playing `role`, or why tests needing it cannot run here (no config for the
 * role, no matching device, no VFIO, no IOMMU group). Reads sysfs and /dev only; opens nothing.
 * @throws VfioBridgeError EDEVCONFIG on a malformed config
 */
export function probeDevice(
  role: string,
  opts: AcquireOptions = {},
):
  | ProbedDevice
  | {
      /** Why tests needing the role cannot run here. */
      skip: string;
    } {
  const r = resolveRole(role, opts);
  if (r.skip !== undefined) return { skip: r.skip };
  const vfio = path.join(opts.vfioDevDir ?? '/dev/vfio', 'vfio');
  if (!fs.existsSync(vfio)) {
    return {
      skip: `role ${role} (${r.bdf}): VFIO is not available here, ${vfio} is missing (modprobe vfio-pci)`,
    };
  }
  if (r.entry.iommuGroup === null) {
    return {
      skip:
        `role ${role} (${r.bdf}): the device has no IOMMU group, so VFIO cannot use it ` +
        '(enable the IOMMU: intel_iommu=on or amd_iommu=on)',
    };
  }
  const driver = r.entry.driver;
  if (opts.bind === false && (driver === null || !driver.startsWith('vfio'))) {
    return { skip: `role ${role} (${r.bdf}) is on ${driver ?? 'no driver'}, not vfio-pci, and bind is off` };
  }
  return { role, bdf: r.bdf, selector: r.selector, driver };
}

/** The error for a skip where devices are required. */
export function requiredError(reason: string): VfioBridgeError {
  return new VfioBridgeError({
    message: `${reason}; devices are required here (CI=true or VFIO_BRIDGE_DEVICES_REQUIRED=1)`,
    code: 'ENODEVICE',
    hint: 'provide the device (and VFIO) on this machine, or unset CI and VFIO_BRIDGE_DEVICES_REQUIRED to skip',
  });
}

/**
 * tryAcquire: the device playing `role`, bound to vfio-pci if it was not, opened through its own
 * container and group; or `{ skip: reason }`.
 * @throws VfioBridgeError ENODEVICE instead of a skip where devices are required; the bind's or
 * open's error when the device exists but cannot be had (in use by the host, group not viable)
 */
export async function tryAcquire(role: string, opts: AcquireOptions = {}): Promise<Acquired> {
  const required = opts.required ?? devicesRequired(opts.env);
  const probed = probeDevice(role, opts);
  if (probed.skip !== undefined) {
    if (required) throw requiredError(probed.skip);
    return { skip: probed.skip };
  }
  opts.signal?.throwIfAborted();
  const { bdf } = probed;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  let state: DriverState | undefined;
  let boundFrom: string | null | undefined;
  const moveOpts = () => ({ ...opts, state: state!, timeoutMs, vfioDevDir: opts.vfioDevDir });
  const restore = async (): Promise<void> => {
    if (boundFrom === undefined) return;
    await restoreDevices([bdf], moveOpts());
  };
  /** Put the device back after `e`, and throw `e`, or both errors when the put-back fails too. */
  const putBackAndThrow = async (e: unknown): Promise<never> => {
    try {
      await restore();
    } catch (r) {
      throw new VfioBridgeError({
        message: `${(e as Error).message}; putting ${bdf} back on ${boundFrom ?? 'no driver'} failed too: ${(r as Error).message}`,
        code: (e as { code?: string }).code ?? 'EACQUIRE',
        cause: new AggregateError([e, r]),
        hint: `vfio-bridge restore ${bdf} puts it back`,
      });
    }
    throw e;
  };
  if (probed.driver === null || !probed.driver.startsWith('vfio')) {
    state = DriverState.load(statePath(opts.stateFile, opts.env ?? process.env));
    const before = state.get(bdf);
    try {
      await bindDevices([bdf], { ...moveOpts(), driver: 'vfio-pci', group: false, force: opts.force });
      boundFrom = probed.driver;
    } catch (e) {
      // A bind that failed after its first write (a driver that never took the device) is undone.
      if (before === undefined && state.get(bdf) !== undefined) boundFrom = probed.driver;
      return putBackAndThrow(e);
    }
  }
  const undo: (() => void)[] = [];
  try {
    opts.signal?.throwIfAborted();
    const container = Container.open(path.join(opts.vfioDevDir ?? '/dev/vfio', 'vfio'));
    undo.push(() => container.close());
    const group = Group.openByBdf(bdf, { sysfsRoot: opts.sysfsRoot, devDir: opts.vfioDevDir });
    undo.push(() => group.close());
    group.setContainer(container);
    container.setIommu();
    const device: Device = await group.openDeviceAsync(bdf, { signal: opts.signal });
    return { device: new TestDevice({ role, bdf, container, group, device, boundFrom, restore }) };
  } catch (e) {
    for (const fn of undo.reverse()) fn();
    return putBackAndThrow(e);
  }
}

/**
 * acquire: {@link tryAcquire}, throwing where it would skip.
 * @throws VfioBridgeError ENODEVICE with the skip's reason
 */
export async function acquire(role: string, opts: AcquireOptions = {}): Promise<TestDevice> {
  const r = await tryAcquire(role, opts);
  if (r.skip !== undefined) {
    throw new VfioBridgeError({
      message: r.skip,
      code: 'ENODEVICE',
      hint: 'tryAcquire (or describeDevice, useDevice) skips instead',
    });
  }
  return r.device;
}
