import * as fs from 'node:fs';

import { Mapping, memfd } from '../../lib';
import { native, type NativeBinding } from '../../lib/native';

// The single accessors find their environment through a per-thread cache keyed by napi_env. Node
// runs one environment per thread, but an embedder (or loading the addon twice) can put two on
// one thread: the cache must then fall back, never serve one environment's mappings to the other.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const addonPath = (require('node-gyp-build') as { path(dir: string): string }).path(`${__dirname}/../..`);

test('two environments on one thread keep their scratch and slot tables apart', () => {
  const second = { exports: {} as NativeBinding };
  process.dlopen(second, addonPath); // a second napi_env on this thread, with its own ModuleData
  const b = second.exports;
  const words = new Uint32Array(b.mappingScratch);

  const fdA = memfd('env-a', 4096);
  const fdB = memfd('env-b', 4096);
  const a = Mapping.fromFd(fdA, 0, 4096); // slot in the first environment
  const mb = b.mmap(fdB, 0, 4096, true, undefined, undefined); // slot in the second
  a.write32(0, 0xaaaa_aaaa);
  for (let i = 0; i < 100; i++) {
    // Alternate between the environments so the cache misses every time.
    words[0] = mb.slot;
    words[2] = 0;
    words[4] = 0xb000_0000 + i;
    b.mapWrite32();
    expect(a.read32(0)).toBe(0xaaaa_aaaa);
    words[0] = mb.slot;
    words[2] = 0;
    b.mapRead32();
    expect(words[4]).toBe(0xb000_0000 + i);
  }
  const viaFd = Buffer.alloc(4);
  fs.readSync(fdB, viaFd, 0, 4, 0);
  expect(viaFd.readUInt32LE(0)).toBe(0xb000_0063);
  b.unmap(mb.handle);
  a.close();
  fs.closeSync(fdA);
  fs.closeSync(fdB);
});

test('useMappingScratch takes only an ArrayBuffer big enough for the operands, and keeps the one it has otherwise', () => {
  const fd = memfd('scratch-checks', 4096);
  const m = Mapping.fromFd(fd, 0, 4096);
  expect(() => native.useMappingScratch(new Uint8Array(24) as unknown as ArrayBuffer)).toThrow(TypeError);
  expect(() => native.useMappingScratch(new ArrayBuffer(16))).toThrow(/at least 24 bytes/);
  m.write32(0, 0x5eed);
  expect(m.read32(0)).toBe(0x5eed);
  m.close();
  fs.closeSync(fd);
});
