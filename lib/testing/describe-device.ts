/**
 * The adapters: {@link describeDevice} and {@link useDevice} decide when the tests are registered
 * (from sysfs and /dev, opening nothing) whether a role can run here; if not, they register one
 * skipped test naming the reason, or where devices are required, one failing test. The device is
 * acquired before the first test and released after the last (unless a test released it), and a
 * release that finds the device left busy fails the suite.
 */
import { VfioBridgeError } from '../base/error';
import { devicesRequired, probeDevice, requiredError, tryAcquire, type AcquireOptions } from './acquire';
import { framework as pick, type Framework, type FrameworkName } from './frameworks';
import type { TestDevice } from './test-device';

/** Options of the adapters. */
export interface DeviceSuiteOptions extends AcquireOptions {
  /** The framework (default: jest's globals when present, else node:test), or another runner's calls. */
  framework?: FrameworkName | Framework;
  /** Timeout of the acquire and release hooks (default 30000 ms: a bind can take seconds). */
  hookTimeoutMs?: number;
}

const noted = new Set<string>();

/** Says once per reason on stderr why tests are skipped: a runner may not list skipped titles. */
function noteSkip(reason: string): void {
  if (noted.has(reason)) return;
  noted.add(reason);
  process.stderr.write(`vfio-bridge/testing: skipping: ${reason}\n`);
}

/** A role's device within a suite. */
export interface DeviceUse {
  /** The role asked for. */
  readonly role: string;
  /** Why the tests cannot run here, or undefined when they can. */
  readonly skip: string | undefined;
  /** The acquired device (from the first test on). @throws VfioBridgeError ENODEVICE before, or when skipped */
  readonly device: TestDevice;
  /** A test that gets the device, or is skipped with the reason. */
  test(name: string, fn: (device: TestDevice) => unknown | Promise<unknown>, timeoutMs?: number): void;
}

/**
 * useDevice: `role`'s device for the tests of the current describe block (or file): acquired in a
 * before-all hook, released in an after-all hook. Register tests with the returned `test`, which
 * skips them with the reason when the device cannot be had here.
 */
export function useDevice(role: string, opts: DeviceSuiteOptions = {}): DeviceUse {
  const fw = pick(opts.framework);
  const required = opts.required ?? devicesRequired(opts.env);
  const probed = probeDevice(role, opts);
  const skip = probed.skip;
  const hookMs = opts.hookTimeoutMs ?? 30_000;
  let device: TestDevice | undefined;
  let late: string | undefined;
  if (skip !== undefined) {
    if (required) {
      fw.test(`${role}: has its device (required here)`, () => {
        throw requiredError(skip);
      });
    } else {
      noteSkip(skip);
      fw.skip(`${role}: skipped: ${skip}`, skip);
    }
  } else {
    fw.before(async () => {
      const r = await tryAcquire(role, { ...opts, required });
      if (r.skip !== undefined) late = r.skip;
      else device = r.device;
    }, hookMs);
    fw.after(async () => {
      const d = device;
      device = undefined;
      // A test that released the device itself has checked the outcome already.
      if (d !== undefined && !d.released) await d.release();
    }, hookMs);
  }
  const get = (): TestDevice => {
    if (device !== undefined) return device;
    throw new VfioBridgeError({
      message: `role ${role}: ${skip ?? late ?? 'the device is acquired before the first test and released after the last'}`,
      code: 'ENODEVICE',
      hint: 'use the device from within a test of the block that called useDevice',
    });
  };
  return {
    role,
    skip,
    get device() {
      return get();
    },
    test(name, fn, timeoutMs) {
      if (skip !== undefined) {
        if (!required) fw.skip(`${name} (skipped: ${skip})`, skip);
        return;
      }
      fw.test(name, () => fn(get()), timeoutMs);
    },
  };
}

/**
 * describeDevice: a describe block titled `role: name` whose tests get `role`'s device through
 * `device()`; skipped with the reason (or failing, where devices are required) when there is none.
 */
export function describeDevice(
  role: string,
  name: string,
  body: (device: () => TestDevice) => void,
  opts: DeviceSuiteOptions = {},
): void {
  const fw = pick(opts.framework);
  fw.describe(`${role}: ${name}`, () => {
    const use = useDevice(role, { ...opts, framework: fw });
    if (use.skip === undefined) body(() => use.device);
  });
}
