// PcMachine's option checks: each is refused before anything is opened (no KVM, VFIO or memory is
// touched), so they run anywhere. The machine itself boots Linux in test/hil/vmm.
import { PcMachine, VmmError } from '../../../lib';
import { bzImage } from './fake-bzimage';

const kernel = bzImage({ version: 0x020f, xloadflags: 1 });

function refused(opts: unknown): unknown {
  try {
    PcMachine.create(opts as never);
  } catch (e) {
    return e;
  }
  throw new Error('PcMachine.create accepted it');
}

describe('PcMachine.create checks its options before opening anything', () => {
  test.each([
    ['no options', null, TypeError],
    ['RAM not whole MiB', { kernel, ramSize: 64 * 2 ** 20 + 4096 }, RangeError],
    ['RAM too small', { kernel, ramSize: 16 * 2 ** 20 }, RangeError],
    ['RAM into the PCI hole', { kernel, ramSize: 4 * 2 ** 30 }, RangeError],
    ['no vCPU', { kernel, cpus: 0 }, RangeError],
    ['callbacks that are not functions', { kernel, onLine: 'log' }, TypeError],
    ['devices not an array', { kernel, devices: { bdf: '0000:00:03.0' } }, TypeError],
    ['a command line that is not a string', { kernel, cmdline: 42 }, TypeError],
    ['a kernel that is neither a path nor bytes', { kernel: 42 }, TypeError],
  ])('%s', (_what, opts, type) => {
    expect(refused(opts)).toBeInstanceOf(type);
  });

  test('an unreadable kernel or initramfs is EINPUT, naming the file', () => {
    const e = refused({ kernel: '/nonexistent/bzImage' });
    expect(e).toBeInstanceOf(VmmError);
    expect(e).toMatchObject({ code: 'EINPUT', message: expect.stringContaining('/nonexistent/bzImage') });
    expect(refused({ kernel, initrd: '/nonexistent/initrd' })).toMatchObject({ code: 'EINPUT' });
  });

  test('a kernel that is not a bzImage is ENOTBZIMAGE', () => {
    expect(refused({ kernel: new Uint8Array(8192) })).toMatchObject({ code: 'ENOTBZIMAGE' });
  });
});

describe('PcMachine.open refuses what create refuses, before opening anything', () => {
  const rejected = async (opts: unknown): Promise<unknown> =>
    PcMachine.open(opts as never).then(
      () => {
        throw new Error('PcMachine.open accepted it');
      },
      (e: unknown) => e,
    );

  test.each([
    ['no options', null, TypeError],
    ['RAM too small', { kernel, ramSize: 16 * 2 ** 20 }, RangeError],
    ['a vCPU nice value out of range', { kernel, vcpuNice: 20 }, RangeError],
    ['a console choice that is not a boolean', { kernel, consoleOnVcpuThreads: 'yes' as never }, TypeError],
    ['an IOMMU backend it does not know', { kernel, backend: 'vfio' }, RangeError],
    ['a kernel that is neither a path nor bytes', { kernel: 42 }, TypeError],
  ])('%s', async (_what, opts, type) => {
    expect(await rejected(opts)).toBeInstanceOf(type);
  });

  test('an unreadable kernel is EINPUT, read without holding the loop', async () => {
    expect(await rejected({ kernel: '/nonexistent/bzImage' })).toMatchObject({
      code: 'EINPUT',
      message: expect.stringContaining('/nonexistent/bzImage'),
    });
    expect(await rejected({ kernel: new Uint8Array(8192) })).toMatchObject({ code: 'ENOTBZIMAGE' });
  });

  test('an aborted signal rejects with its reason before anything is opened; a non-signal is a TypeError', async () => {
    const ac = new AbortController();
    const reason = new Error('not now');
    ac.abort(reason);
    await expect(PcMachine.open({ kernel, kvmPath: '/nonexistent/kvm' }, { signal: ac.signal })).rejects.toBe(
      reason,
    );
    await expect(PcMachine.open({ kernel }, { signal: {} as AbortSignal })).rejects.toMatchObject({
      name: 'TypeError',
      code: 'ERR_INVALID_ARG_TYPE',
    });
  });
});
