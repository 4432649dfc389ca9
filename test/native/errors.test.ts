import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  ArgRangeError,
  ArgTypeError,
  Kvm,
  KvmError,
  MemoryTopologyError,
  VfioBridgeError,
  VfioError,
  VmmError,
} from '../../lib';
import { UsageError } from '../../lib/cli/errors';
import { errnoName, hintFor, makeNativeError, memlockHint } from '../../lib/base/native-errors';
import { native } from '../../lib/native';
import { ROOT } from './helpers';

describe('VfioError', () => {
  test('carries every field, shaped like SystemError, with the hint beside the message', () => {
    const cause = new Error('underneath');
    const e = new VfioError({
      message: 'open failed',
      code: 'EBUSY',
      errno: 16,
      op: 'open',
      path: '/dev/vfio/12',
      bdf: '0000:00:03.0',
      hint: 'close it',
      cause,
    });
    expect(e).toBeInstanceOf(VfioBridgeError);
    expect(e.name).toBe('VfioError');
    expect(e).toMatchObject({
      code: 'EBUSY',
      errno: -16,
      syscall: 'open',
      op: 'open',
      path: '/dev/vfio/12',
      bdf: '0000:00:03.0',
      hint: 'close it',
    });
    expect(e.message).toBe('open failed');
    expect(e.cause).toBe(cause);
    expect(new VfioError({ message: 'm', code: 'EIO', errno: 5, op: 'VFIO_DEVICE_RESET' }).syscall).toBe(
      'ioctl',
    );
    const sigbus = new VfioError({ message: 'm', code: 'SIGBUS', op: 'mapping.read8' });
    expect([sigbus.errno, sigbus.syscall, sigbus.cause]).toEqual([undefined, undefined, undefined]);
  });

  test('every layer throws one family; bad arguments carry Node-style codes', () => {
    const errors = [
      new KvmError({ message: 'm', code: 'ENOCAP', op: 'KVM_CHECK_EXTENSION' }),
      new VmmError('EBUSY', 'busy', 'wait'),
      new MemoryTopologyError('cycle', 'loop'),
      new UsageError('bad', 'fix'),
    ];
    for (const e of errors) {
      expect(e).toBeInstanceOf(VfioBridgeError);
      expect(typeof e.code).toBe('string');
    }
    expect(errors[1]).toMatchObject({ name: 'VmmError', message: 'busy', hint: 'wait' });
    expect(new ArgRangeError('x')).toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    expect(new ArgTypeError('x')).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    expect(() => Kvm.open({ path: '/nonexistent/kvm' })).toThrow(KvmError);
  });

  test('errors from the addon are built by the factory, with code, errno and hint', () => {
    let error: unknown;
    try {
      native.openFd('/dev/vfio/987654');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(VfioError);
    expect(error).toMatchObject({
      code: 'ENOENT',
      errno: -2,
      syscall: 'open',
      op: 'open',
      path: '/dev/vfio/987654',
    });
    expect((error as VfioError).message).toMatch(/^open failed: No such file or directory/);
  });

  test('the factory maps errno to code and builds RangeError/TypeError in this realm', () => {
    expect(makeNativeError('VfioError', 'pread', undefined, 5, 'm', undefined, undefined)).toMatchObject({
      code: 'EIO',
      errno: -5,
    });
    expect(
      makeNativeError('RangeError', '', undefined, undefined, 'bad', undefined, undefined),
    ).toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    expect(makeNativeError('TypeError', '', undefined, undefined, 'bad', undefined, undefined)).toMatchObject(
      { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' },
    );
    expect(
      makeNativeError('VfioError', 'KVM_RUN', undefined, 4, 'm', '/dev/kvm vm vcpu 0', undefined),
    ).toBeInstanceOf(KvmError);
    expect(errnoName(1)).toBe('EPERM');
  });

  test('errnoName names errnos libuv does not know, and never returns a sentence', () => {
    // libuv has no name for EDEADLK: util.getSystemErrorName answers "Unknown system error -35".
    expect(errnoName(35)).toBe('EDEADLK');
    expect(errnoName(9999)).toBe('E9999');
    expect(makeNativeError('VfioError', 'ioctl', undefined, 35, 'm', undefined, undefined)).toMatchObject({
      code: 'EDEADLK',
      errno: -35,
    });
  });
});

describe('hints', () => {
  test('EACCES / EPERM on /dev/vfio/N: permissions or root', () => {
    for (const code of ['EACCES', 'EPERM']) {
      expect(hintFor({ op: 'open', code, path: '/dev/vfio/12' })).toMatch(/run as root.*access/);
    }
    expect(hintFor({ op: 'open', code: 'EACCES', path: '/tmp/x' })).toBeUndefined();
  });

  test('/dev/kvm: missing (load the modules) and no permission (the kvm group)', () => {
    expect(hintFor({ op: 'open', code: 'ENOENT', path: '/dev/kvm' })).toMatch(
      /modprobe kvm_intel or kvm_amd/,
    );
    expect(hintFor({ op: 'open', code: 'EACCES', path: '/dev/kvm' })).toMatch(/kvm group/);
  });

  test('EBUSY: the group is open elsewhere', () => {
    expect(hintFor({ op: 'open', code: 'EBUSY', path: '/dev/vfio/12' })).toMatch(/already open elsewhere/);
    expect(hintFor({ op: 'VFIO_GROUP_GET_DEVICE_FD', code: 'EBUSY', bdf: '0000:00:03.0' })).toMatch(
      /0000:00:03.0 is busy in the kernel: it is open through another interface/,
    );
  });

  test('ENOMEM shows the current RLIMIT_MEMLOCK', () => {
    const [soft] = native.memlockLimit();
    const hint = hintFor({ op: 'VFIO_IOMMU_MAP_DMA', code: 'ENOMEM' })!;
    expect(hint).toMatch(/RLIMIT_MEMLOCK is /);
    expect(hint).toContain(soft === 0xffff_ffff_ffff_ffffn ? 'unlimited' : `${soft / 1024n} KiB`);
    expect(memlockHint()).toBe(hint);
  });

  test('ENOMEM names RLIMIT_MEMLOCK only where memory is pinned for DMA', () => {
    const mmap = hintFor({ op: 'mmap', code: 'ENOMEM' })!;
    expect(mmap).toMatch(/address space/);
    expect(mmap).toMatch(/vm\.max_map_count/);
    expect(mmap).not.toMatch(/MEMLOCK/);
    for (const op of ['VFIO_DEVICE_GET_REGION_INFO', 'VFIO_GROUP_GET_DEVICE_FD', 'VFIO_SET_IOMMU']) {
      expect(hintFor({ op, code: 'ENOMEM' })).toBeUndefined();
    }
    expect(hintFor({ op: 'memfd_create', code: 'ENOMEM' })).toBeUndefined();
  });

  test('EINVAL from mmap: the region is not mappable there', () => {
    expect(hintFor({ op: 'mmap', code: 'EINVAL' })).toMatch(/not mappable there.*sparse-mmap/);
    expect(hintFor({ op: 'VFIO_SET_IOMMU', code: 'EINVAL' })).toBeUndefined();
  });

  test('SIGBUS and ECLOSED', () => {
    expect(hintFor({ op: 'mapping.read32', code: 'SIGBUS' })).toMatch(/memory decode/);
    expect(hintFor({ op: 'mapping.read32', code: 'ECLOSED' })).toMatch(/closed/);
  });
});

describe('errno', () => {
  // The shim makes every C++ allocation overwrite errno, so a failure path that builds strings or
  // an ErrorContext before reading errno reports EDOM (33) instead of the syscall's errno.
  test('is captured before the error is built, even when allocation clobbers it', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-bridge-errno-'));
    try {
      const shim = path.join(dir, 'errno_clobber.so');
      const build = spawnSync(
        'g++',
        ['-shared', '-fPIC', '-O2', path.join(__dirname, 'errno_clobber.cc'), '-o', shim],
        { encoding: 'utf8' },
      );
      expect(build.stderr).toBe('');
      expect(build.status).toBe(0);
      const script = `
        const fs = require('node:fs');
        const { Mapping } = require('./lib');
        const { native } = require('./lib/native');
        const codes = {};
        const attempt = (name, fn) => { try { fn(); codes[name] = 'no error'; } catch (e) { codes[name] = e.code; } };
        attempt('open', () => native.openFd('/nonexistent-vfio-bridge-dir/a-path-longer-than-sso'));
        const fd = fs.openSync('/dev/null', 'r');
        fs.closeSync(fd);
        attempt('mmap', () => Mapping.fromFd(fd, 4096, 4096));
        attempt('memfd_create', () => native.memfd('x'.repeat(300), 4096));
        console.log(JSON.stringify(codes));
      `;
      const r = spawnSync(process.execPath, ['-r', '@swc-node/register', '-e', script], {
        cwd: ROOT,
        encoding: 'utf8',
        timeout: 20_000,
        env: { ...process.env, LD_PRELOAD: shim },
      });
      expect(r.status).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual({ open: 'ENOENT', mmap: 'EBADF', memfd_create: 'EINVAL' });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the error factory', () => {
  test('lib/kvm loaded alone turns native failures into KvmErrors (lib/base registers the factory)', () => {
    const out = execFileSync(
      process.execPath,
      [
        '-r',
        '@swc-node/register',
        '-e',
        "const { Kvm } = require('./lib/kvm'); try { Kvm.open({ path: '/nonexistent/kvm' }); } catch (e) { console.log(e.name, e.code, e.op); }",
      ],
      { cwd: ROOT, encoding: 'utf8' },
    );
    expect(out.trim()).toBe('KvmError ENOENT open');
  });
});
