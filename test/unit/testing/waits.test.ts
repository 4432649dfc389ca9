import { EventEmitter } from 'node:events';
// The waits on fakes: success, timeout (naming what was awaited and the last value), abort.
import { InterruptWaiter, waitForBytes, waitForRegister, type IrqSource } from '../../../lib/testing';
import type { IrqOptions } from '../../../lib/vfio';

const aborted = (reason: unknown) => {
  const c = new AbortController();
  c.abort(reason);
  return c.signal;
};

describe('waitForRegister', () => {
  test('resolves once the masked value matches, reading a mapping', async () => {
    const regs = new DataView(new ArrayBuffer(16));
    const mapping = { read: (off: number) => regs.getUint32(off, true) };
    setTimeout(() => regs.setUint32(4, 0x8001, true), 20);
    await expect(waitForRegister(mapping, 4, 1, { mask: 1 })).resolves.toBe(0x8001);
  });

  test('reads a region of a device with pread', async () => {
    const device = {
      read: (region: number, off: number, size: number) => (region === 0 && off === 8 && size === 2 ? 7 : 0),
    };
    await expect(waitForRegister({ device, region: 0 }, 8, 7, { size: 2 })).resolves.toBe(7);
  });

  test('times out with ETIMEDOUT naming the register, the mask and the last value', async () => {
    const mapping = { read: () => 0x3 };
    const e = await waitForRegister(mapping, 0x98, 0, {
      mask: 1,
      timeoutMs: 30,
      name: 'edu DMA command',
    }).catch((x: unknown) => x);
    expect(e).toMatchObject({
      code: 'ETIMEDOUT',
      message: 'timed out after 30 ms waiting for edu DMA command at 0x98 & 0x1 to read 0x0 (last seen: 0x3)',
    });
  });

  test('64-bit registers compare as bigints', async () => {
    const mapping = { read: () => 0xffff_0000_0000_0001n };
    await expect(
      waitForRegister(mapping, 0, 0xffff_0000_0000_0000n, { size: 8, mask: ~1n & 0xffff_ffff_ffff_ffffn }),
    ).resolves.toBe(0xffff_0000_0000_0001n);
  });

  test('an abort rejects with the signal’s reason, before or during the wait', async () => {
    const mapping = { read: () => 0 };
    await expect(waitForRegister(mapping, 0, 1, { signal: aborted('stop') })).rejects.toBe('stop');
    const c = new AbortController();
    const p = waitForRegister(mapping, 0, 1, { signal: c.signal });
    setTimeout(() => c.abort(new Error('test over')), 10);
    await expect(p).rejects.toThrow('test over');
  });

  test('refuses a bad timeout', () => {
    expect(() => waitForRegister({ read: () => 0 }, 0, 0, { timeoutMs: -1 })).toThrow(RangeError);
  });
});

describe('waitForBytes', () => {
  test('bytes: resolves once the buffer starts with them', async () => {
    const buf = new Uint8Array(64);
    setTimeout(() => buf.set([1, 2, 3]), 10);
    await expect(waitForBytes({ bytes: buf }, new Uint8Array([1, 2, 3]))).resolves.toBe(buf);
  });

  test('a predicate; a timeout shows the first differing bytes', async () => {
    const buf = new ArrayBuffer(32);
    new Uint8Array(buf).set([1, 2, 9, 9]);
    await expect(waitForBytes(buf, (b) => b[0] === 1, { timeoutMs: 10 })).resolves.toBeInstanceOf(Uint8Array);
    const e = await waitForBytes(buf, new Uint8Array([1, 2, 3]), { timeoutMs: 20 }).catch((x: unknown) => x);
    expect(e).toMatchObject({
      code: 'ETIMEDOUT',
      message:
        'timed out after 20 ms waiting for DMA buffer to hold 3 bytes 010203 (last seen: [2] 09090000000000000000000000000000...)',
    });
  });

  test('an abort rejects with the reason', async () => {
    await expect(waitForBytes(new Uint8Array(4), () => false, { signal: aborted('bye') })).rejects.toBe(
      'bye',
    );
  });
});

/** An IRQ source whose interrupts the test raises. */
function fakeIrqs(): IrqSource & { fire(vector: number, count?: number): void; closed: number } {
  const irq = new EventEmitter();
  const src = {
    bdf: '0000:00:03.0',
    closed: 0,
    enableIrq(_index: number, opts: IrqOptions) {
      return Object.assign(irq, { vectors: opts.vectors ?? 1, close: () => void src.closed++ });
    },
    fire(vector: number, count = 1) {
      irq.emit('interrupt', vector, count);
    },
  };
  return src;
}

describe('InterruptWaiter', () => {
  test('next() resolves on the next interrupt of its vector only', async () => {
    const src = fakeIrqs();
    const irq = new InterruptWaiter(src, 1, { vectors: 2 });
    const next = irq.next(1, { timeoutMs: 1000 });
    src.fire(0);
    src.fire(1);
    await expect(next).resolves.toBe(1);
    expect([irq.count(0), irq.count(1)]).toEqual([1, 1]);
    await expect(irq.waitForCount(0, 1)).resolves.toBe(1); // counted already
    irq.close();
    expect(src.closed).toBe(1);
  });

  test('times out naming the device, the index, the vector and the count', async () => {
    const irq = new InterruptWaiter(fakeIrqs(), 1);
    await expect(irq.next(0, { timeoutMs: 20 })).rejects.toMatchObject({
      code: 'ETIMEDOUT',
      message:
        'timed out after 20 ms waiting for interrupt 1 on MSI vector 0 of 0000:00:03.0 (last seen: 0 interrupt(s))',
    });
    irq.close();
  });

  test('aborts with the reason; close rejects pending waits with ECLOSED', async () => {
    const irq = new InterruptWaiter(fakeIrqs(), 2);
    await expect(irq.next(0, { signal: aborted('early') })).rejects.toBe('early');
    const c = new AbortController();
    const p = irq.next(0, { signal: c.signal });
    c.abort('late');
    await expect(p).rejects.toBe('late');
    const q = irq.next(0);
    irq.close();
    await expect(q).rejects.toMatchObject({ code: 'ECLOSED' });
    expect(() => irq.next(3)).toThrow(RangeError);
  });
});

test('a failed eventfd rejects the waits on an InterruptWaiter, pending and later', async () => {
  const events = new EventEmitter();
  const src: IrqSource = {
    bdf: '0000:00:03.0',
    enableIrq() {
      return Object.assign(events, { vectors: 1, close: () => undefined });
    },
  };
  const irq = new InterruptWaiter(src, 1);
  const heard: unknown[] = [];
  irq.on('error', (e) => heard.push(e));
  const p = irq.next(0);
  const boom = new Error('read failed');
  events.emit('error', boom, 0);
  await expect(p).rejects.toBe(boom);
  await expect(irq.next(0)).rejects.toBe(boom);
  expect(heard).toEqual([boom]);
  irq.close();
});

test('waitForRegister refuses a source that cannot be read', () => {
  expect(() => waitForRegister({} as never, 0, 0)).toThrow(TypeError);
});
