// Interrupts on real vfio-pci: edu's INTx and MSI, e1000e's MSI-X with emulated masking.
import { describePci, type LabDevice, openLab, placeBar } from './lab';
import {
  CMD_DECODE_MASTER,
  CMD_INTX_DISABLE,
  collect,
  EDU,
  enableMsi,
  kernelIrqCount,
  settle,
  until,
} from './irq-helpers';

// TCG is slow, and a bus reset waits for its link: seconds, not the default five.
jest.setTimeout(60000);

const EDU_BAR = 0xfe000000;

describePci('edu', 'interrupts from edu', (bdfOf) => {
  let lab: LabDevice;
  beforeEach(() => {
    lab = openLab(bdfOf(), { log: null });
    placeBar(lab.dev, 0, EDU_BAR);
    lab.dev.configWrite(0x04, 2, CMD_DECODE_MASTER);
  });
  afterEach(() => lab?.close());

  const raise = (v = 1): void => lab.bus.mmioWrite(EDU_BAR + EDU.raise, 4, v);
  const ack = (): void =>
    lab.bus.mmioWrite(EDU_BAR + EDU.ack, 4, lab.bus.mmioRead(EDU_BAR + EDU.status, 4) as number);

  test('INTx: one event with count 1, none before eoi(), the next after it', async () => {
    const { got } = collect(lab.dev);
    expect(lab.dev.irq.mode).toBe('intx');
    expect(lab.dev.irq.pin).toBe(1);
    raise();
    await until(() => got.length > 0, 10000, 'the INTx interrupt');
    expect(got).toEqual([[0, 1, 'intx']]);
    // The kernel masked the line: a new assertion stays invisible until the guest's EOI.
    ack();
    raise(2);
    await settle(300);
    expect(got).toHaveLength(1);
    lab.dev.irq.eoi();
    await until(() => got.length > 1, 10000, 'the INTx interrupt after eoi()');
    expect(got[1]).toEqual([0, 1, 'intx']);
    ack();
    lab.dev.irq.eoi();
  });

  test('INTx: the command register INTx-disable bit holds the line back until cleared', async () => {
    const { got } = collect(lab.dev);
    raise();
    await until(() => got.length > 0, 10000, 'the first interrupt');
    ack();
    lab.dev.configWrite(0x04, 2, CMD_DECODE_MASTER | CMD_INTX_DISABLE);
    lab.dev.irq.eoi();
    raise();
    await settle(300);
    expect(got).toHaveLength(1);
    lab.dev.configWrite(0x04, 2, CMD_DECODE_MASTER);
    await until(() => got.length > 1, 10000, 'the held interrupt');
    expect(got[1]).toEqual([0, 1, 'intx']);
    ack();
  });

  test('MSI: 1,000 raises are all accounted for by the coalesced counts', async () => {
    const { got } = collect(lab.dev);
    const changes: unknown[] = [];
    lab.dev.irq.on('change', (c) => changes.push(c));
    enableMsi(lab.dev, 0xfee00000, 0x4021);
    expect(lab.dev.irq.mode).toBe('msi');
    expect(changes[0]).toEqual({ kind: 'mode', mode: 'msi', vectors: 1 });
    expect(changes[1]).toEqual({
      kind: 'vector',
      type: 'msi',
      vector: 0,
      address: 0xfee00000n,
      data: 0x4021,
      masked: false,
    });
    expect(lab.dev.irq.host?.fds[0]).toBeGreaterThan(2);
    const total = (): number => got.reduce((s, [, n]) => s + n, 0);
    // Two MSIs that reach a CPU before it took the first merge in its APIC, below anything VFIO
    // sees; so each raise waits until the guest kernel took the previous one (its own count in
    // /proc/interrupts). JavaScript does not run meanwhile, so the eventfd piles them up and the
    // watcher hands them over coalesced.
    const name = `vfio-msi[0](${lab.dev.bdf})`;
    const k0 = kernelIrqCount(name);
    for (let i = 0; i < 1000; i++) {
      raise();
      const end = Date.now() + 1000;
      while (kernelIrqCount(name) < k0 + i + 1 && Date.now() < end);
      if (i % 100 === 99) await settle(1);
    }
    expect(kernelIrqCount(name) - k0).toBe(1000);
    await until(() => total() >= 1000, 20000, '1,000 interrupts');
    await settle(200);
    expect(total()).toBe(1000);
    expect(got.every(([v, n, t]) => v === 0 && n >= 1 && t === 'msi')).toBe(true);
    // Coalesced: fewer wake-ups than interrupts, and still every interrupt counted.
    expect(got.length).toBeLessThan(1000);
    ack();
  });

  test('MSI disable falls back to INTx for a listening VMM', () => {
    collect(lab.dev);
    enableMsi(lab.dev);
    const cap = lab.dev.irq.msi!.capOffset;
    lab.dev.configWrite(cap + 2, 2, lab.dev.configRead(cap + 2, 2) & ~1);
    expect(lab.dev.irq.mode).toBe('intx');
  });
});

describePci('e1000e', 'MSI-X from e1000e', (bdfOf) => {
  let lab: LabDevice;
  const BAR0 = 0xfea00000;
  const BAR3 = 0xfebf0000;
  const ICR = 0xc0;
  const ICS = 0xc8;
  const IMS = 0xd0;
  const IVAR = 0xe4;
  const OTHER = 1 << 24;
  beforeEach(() => {
    lab = openLab(bdfOf(), { log: null });
    placeBar(lab.dev, 0, BAR0);
    placeBar(lab.dev, 3, BAR3);
    lab.dev.configWrite(0x04, 2, CMD_DECODE_MASTER);
  });
  afterEach(() => lab?.close());

  /** The guest programs table entry `v` through the bus, as its driver would. */
  function program(v: number, masked: boolean): void {
    const e = BAR3 + lab.dev.msix!.tableOffset + 16 * v;
    lab.bus.mmioWrite(e, 4, 0xfee00000);
    lab.bus.mmioWrite(e + 4, 4, 0);
    lab.bus.mmioWrite(e + 8, 4, 0x4030 + v);
    lab.bus.mmioWrite(e + 12, 4, masked ? 1 : 0);
  }
  const setMask = (v: number, masked: boolean): void =>
    lab.bus.mmioWrite(BAR3 + lab.dev.msix!.tableOffset + 16 * v + 12, 4, masked ? 1 : 0);
  const pba = (): number => lab.bus.mmioRead(BAR3 + lab.dev.msix!.pbaOffset, 4) as number;
  /** Routes the "other" cause to vector `v` and raises it through ICS. */
  function raiseOther(v: number): void {
    lab.bus.mmioWrite(BAR0 + ICR, 4, 0xffffffff); // write-1-to-clear, so the cause is raised anew
    lab.bus.mmioWrite(BAR0 + IVAR, 4, (0x8 | v) << 16);
    lab.bus.mmioWrite(BAR0 + IMS, 4, OTHER);
    lab.bus.mmioWrite(BAR0 + ICS, 4, OTHER);
  }

  test('a cause raised through ICS arrives on the vector the guest programmed', async () => {
    const { got } = collect(lab.dev);
    const msix = lab.dev.msix!;
    program(2, false);
    const cap = msix.capOffset;
    lab.dev.configWrite(cap + 2, 2, 0x8000);
    expect(lab.dev.irq.mode).toBe('msix');
    // Vectors 0..2 on the host: up to the highest unmasked entry.
    expect(lab.dev.irq.host?.vectors).toBe(3);
    raiseOther(2);
    await until(() => got.length > 0, 10000, 'the MSI-X interrupt');
    expect(got[0].slice(0, 1)).toEqual([2]);
    expect(got[0][2]).toBe('msix');
    expect(lab.dev.irq.message('msix', 2)).toEqual({
      index: 2,
      address: 0xfee00000n,
      data: 0x4032,
      masked: false,
    });
  });

  test('masked vector: pending bit in the emulated PBA, delivered on unmask; growth on unmask', async () => {
    const { got } = collect(lab.dev);
    program(1, false);
    program(4, true);
    lab.dev.configWrite(lab.dev.msix!.capOffset + 2, 2, 0x8000);
    expect(lab.dev.irq.host?.vectors).toBe(2);
    setMask(1, true);
    raiseOther(1);
    await settle(300);
    expect(got).toEqual([]);
    expect(lab.dev.msix!.isPending(1)).toBe(true);
    expect(pba()).toBe(0b10);
    setMask(1, false);
    expect(got).toEqual([[1, 1, 'msix']]);
    expect(lab.dev.msix!.isPending(1)).toBe(false);
    // Unmasking vector 4 grows the host's vector set in place.
    setMask(4, false);
    expect(lab.dev.irq.host?.vectors).toBe(5);
    raiseOther(4);
    await until(() => got.length > 1, 10000, 'the interrupt on the grown vector');
    expect(got[1][0]).toBe(4);
    expect(lab.dev.deviceErrorCount).toBe(0);
  });

  test('the function mask holds every vector and releases pending ones', async () => {
    const { got } = collect(lab.dev);
    program(0, false);
    const ctl = lab.dev.msix!.capOffset + 2;
    lab.dev.configWrite(ctl, 2, 0xc000);
    raiseOther(0);
    await settle(300);
    expect(got).toEqual([]);
    expect(lab.dev.msix!.isPending(0)).toBe(true);
    lab.dev.configWrite(ctl, 2, 0x8000);
    expect(got).toEqual([[0, 1, 'msix']]);
  });
});
