import { AddressSpace, MemoryRegion } from '../../../lib/memory';
import { COM1_PORT, Uart16550 } from '../../../lib/vmm';

const THR = 0,
  IER = 1,
  IIR = 2,
  FCR = 2,
  LCR = 3,
  MCR = 4,
  LSR = 5,
  MSR = 6,
  SCR = 7;

describe('Uart16550 as Linux 8250 autoconfig probes it', () => {
  it('passes the IER, scratch, loopback and FIFO probes and reads as a 16550A', () => {
    const u = new Uart16550();
    // IER holds exactly the four standard enables (the driver writes 0 then 0x0f, and XScale's UUE).
    u.write(IER, 0);
    expect(u.read(IER)).toBe(0);
    u.write(IER, 0xff);
    expect(u.read(IER)).toBe(0x0f);
    u.write(IER, 0);
    u.write(SCR, 0xa5);
    expect(u.read(SCR)).toBe(0xa5);
    // Loopback: MCR LOOP|OUT2|RTS must show DCD|CTS in MSR's top half (0x90).
    u.write(MCR, 0x1a);
    expect(u.read(MSR) & 0xf0).toBe(0x90);
    u.write(MCR, 0x08);
    // FIFO enabled: IIR bits 7:6 read 3, which is what makes the driver say 16550A.
    u.write(FCR, 0x01);
    expect(u.read(IIR) >> 6).toBe(3);
    u.write(FCR, 0x00);
    expect(u.read(IIR) >> 6).toBe(0);
    // EFR probes (LCR 0xbf) see IIR, never 0, so no 16650 is claimed.
    u.write(LCR, 0xbf);
    expect(u.read(IIR)).not.toBe(0);
    u.write(LCR, 0x03);
  });

  it('reports an idle, empty transmitter and modem lines present outside loopback', () => {
    const u = new Uart16550();
    expect(u.read(LSR)).toBe(0x60);
    expect(u.read(MSR)).toBe(0xb0);
    expect(u.read(IIR)).toBe(0x01);
  });
});

describe('Uart16550 output', () => {
  it('hands each transmitted byte out at once, splits lines and keeps a capture', () => {
    const bytes: number[] = [];
    const lines: string[] = [];
    const u = new Uart16550({ onOutput: (b) => bytes.push(...b), onLine: (l) => lines.push(l) });
    for (const c of Buffer.from('hello\r\nworld\npart')) u.write(THR, c);
    expect(Buffer.from(bytes).toString()).toBe('hello\r\nworld\npart');
    expect(lines).toEqual(['hello', 'world']);
    expect(u.captured).toBe('hello\r\nworld\npart');
    expect(u.transmitted).toBe(17);
  });

  it('keeps only the last captureLimit bytes', () => {
    const u = new Uart16550({ captureLimit: 8 });
    for (const c of Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz')) u.write(THR, c);
    expect(u.captured).toBe('stuvwxyz');
  });

  it('keeps the last captureLimit bytes across capture pieces and compactions', () => {
    // 4096-byte pieces; 10,000 bytes kept of 50,000 written means several compactions.
    const u = new Uart16550({ captureLimit: 10_000 });
    const text = Array.from({ length: 50_000 }, (_, i) => String.fromCharCode(0x21 + ((i * 7) % 90))).join(
      '',
    );
    for (const c of Buffer.from(text)) u.write(THR, c);
    expect(u.captured).toBe(text.slice(-10_000));
    expect(u.transmitted).toBe(50_000);
    const short = new Uart16550({ captureLimit: 10_000 });
    for (const c of Buffer.from('abc')) short.write(THR, c);
    expect(short.captured).toBe('abc');
  });

  it('asks wantsOutput before each byte, and makes no byte string nobody wants', () => {
    const out: number[] = [];
    let want = false;
    const u = new Uart16550({ onOutput: (b) => out.push(...b), wantsOutput: () => want });
    u.write(THR, 0x41);
    want = true;
    u.write(THR, 0x42);
    expect(out).toEqual([0x42]);
    // The capture and the lines do not depend on it.
    expect(u.captured).toBe('AB');
    expect(() => new Uart16550({ wantsOutput: 1 as never })).toThrow(/wantsOutput must be a function/);
  });

  it('writes the divisor latch, not the line, while DLAB is set', () => {
    const out: number[] = [];
    const u = new Uart16550({ onOutput: (b) => out.push(...b) });
    u.write(LCR, 0x83);
    u.write(THR, 0x01);
    u.write(IER, 0x00);
    expect(u.read(THR)).toBe(0x01);
    expect(u.read(IER)).toBe(0x00);
    u.write(LCR, 0x03);
    expect(out).toEqual([]);
    expect(u.read(IER)).toBe(0);
  });

  it('sends bytes back as input in loopback instead of out', () => {
    const out: number[] = [];
    const u = new Uart16550({ onOutput: (b) => out.push(...b) });
    u.write(MCR, 0x10);
    u.write(THR, 0x41);
    expect(out).toEqual([]);
    expect(u.read(LSR) & 1).toBe(1);
    expect(u.read(THR)).toBe(0x41);
    expect(u.read(LSR) & 1).toBe(0);
  });
});

describe('Uart16550 interrupts', () => {
  it('raises THRE when the enable is turned on with the transmitter empty; reading IIR acknowledges it', () => {
    const levels: boolean[] = [];
    const u = new Uart16550({ onIrq: (l) => levels.push(l) });
    u.write(FCR, 0x01);
    u.write(IER, 0x02);
    expect(levels).toEqual([true]);
    expect(u.irqLevel).toBe(true);
    expect(u.read(IIR)).toBe(0xc2);
    expect(levels).toEqual([true, false]);
    expect(u.read(IIR)).toBe(0xc1);
    // Each transmitted byte empties the holding register again.
    u.write(THR, 0x58);
    expect(levels).toEqual([true, false, true]);
  });

  it('re-asserts THRE on re-enable, so the driver does not flag UART_BUG_THRE', () => {
    const u = new Uart16550();
    u.write(IER, 0x02);
    u.read(IIR); // acknowledged
    u.write(IER, 0);
    u.write(IER, 0x02);
    expect(u.read(IIR) & 0x01).toBe(0);
  });

  it('does not raise anything with interrupts disabled', () => {
    const levels: boolean[] = [];
    const u = new Uart16550({ onIrq: (l) => levels.push(l) });
    for (const c of Buffer.from('no irq\n')) u.write(THR, c);
    u.input('x');
    expect(levels).toEqual([]);
  });

  it('reports received data at the trigger level, and below it as a character timeout', () => {
    const u = new Uart16550();
    u.write(IER, 0x01);
    u.write(FCR, 0x01 | (1 << 6)); // FIFO, trigger level 4
    u.input('ab');
    expect(u.read(IIR)).toBe(0xcc);
    u.input('cd');
    expect(u.read(IIR)).toBe(0xc4);
    expect([u.read(THR), u.read(THR), u.read(THR), u.read(THR)]).toEqual([0x61, 0x62, 0x63, 0x64]);
    expect(u.read(IIR)).toBe(0xc1);
    expect(u.irqLevel).toBe(false);
  });

  it('counts an overrun, shows it in LSR once and raises the line status interrupt', () => {
    const u = new Uart16550();
    u.write(IER, 0x05);
    u.input('abc'); // no FIFO: one byte holds, two overrun
    expect(u.overruns).toBe(2);
    expect(u.read(IIR)).toBe(0x06);
    expect(u.read(LSR) & 0x03).toBe(0x03);
    expect(u.read(LSR) & 0x02).toBe(0);
    expect(u.read(IIR)).toBe(0x04);
  });

  it('latches modem status deltas in loopback and clears them on read', () => {
    const u = new Uart16550();
    u.write(MCR, 0x10);
    const changes = u.read(MSR);
    expect(changes & 0x0f).toBe(0x0b); // CTS, DSR and DCD dropped
    u.write(IER, 0x08);
    u.write(MCR, 0x13);
    expect(u.read(IIR)).toBe(0x00);
    expect(u.read(MSR)).toBe(0x33);
    expect(u.read(IIR)).toBe(0x01);
  });

  it('clears the receive FIFO on FCR bit 1 and resets to power-on state', () => {
    const u = new Uart16550();
    u.write(FCR, 0x01);
    u.input('zz');
    u.write(FCR, 0x03);
    expect(u.read(LSR) & 1).toBe(0);
    u.write(SCR, 9);
    u.reset();
    expect(u.read(SCR)).toBe(0);
    expect(u.read(IIR)).toBe(0x01);
  });
});

describe('Uart16550 as a port region', () => {
  it('serves byte accesses at 0x3f8 and wider ones as byte accesses of consecutive registers', () => {
    const out: number[] = [];
    const u = new Uart16550({ onOutput: (b) => out.push(...b) });
    const io = MemoryRegion.container('io', 0x10000);
    io.addSubregion(u.region(), COM1_PORT);
    const as = new AddressSpace('io', io, { log: null });
    const unassigned: unknown[] = [];
    as.on('unassigned', (e) => unassigned.push(e));
    as.write(COM1_PORT, 1, 0x4b);
    expect(out).toEqual([0x4b]);
    expect(as.read(COM1_PORT + LSR, 1)).toBe(0x60);
    as.write(COM1_PORT + SCR, 1, 0x5a);
    // outw at SCR-1: MSR is read-only, SCR takes the high byte; inw reads both back.
    expect(() => as.write(COM1_PORT + SCR - 1, 2, 0xa500)).not.toThrow();
    expect(as.read(COM1_PORT + SCR, 1)).toBe(0xa5);
    expect((as.read(COM1_PORT + SCR - 1, 2) as number) >> 8).toBe(0xa5);
    expect(unassigned).toHaveLength(0);
    expect(out).toEqual([0x4b]);
    as.close();
  });

  it('refuses programming errors with RangeError/TypeError', () => {
    const u = new Uart16550();
    expect(() => u.read(8)).toThrow(RangeError);
    expect(() => u.write(-1, 0)).toThrow(RangeError);
    expect(() => u.write(0, 1.5)).toThrow(TypeError);
    expect(() => new Uart16550({ captureLimit: -1 })).toThrow(RangeError);
    expect(() => new Uart16550({ onIrq: 3 as never })).toThrow(TypeError);
  });
});

describe('Uart16550 registers served elsewhere (quiet, transmitBytes, watchQuiet)', () => {
  it('says which registers are quiet as its state changes, and tells each change once', () => {
    const u = new Uart16550();
    let changes = 0;
    const stop = u.watchQuiet(() => changes++);
    expect(u.quiet).toEqual({ thr: true, lsr: 0x60, msr: 0xb0 });
    // The divisor latch takes THR's place: THR writes are the model's again.
    u.write(LCR, 0x83);
    expect(u.quiet).toEqual({ thr: false, lsr: 0x60, msr: 0xb0 });
    u.write(THR, 0x01); // DLL
    u.write(LCR, 0x03);
    expect(u.quiet.thr).toBe(true);
    expect(changes).toBe(2);
    // Loopback: a THR write is received, not transmitted; the modem lines changed, and reading
    // MSR clears that, so MSR is the model's until it has been read.
    u.write(MCR, 0x18);
    expect(u.quiet.thr).toBe(false);
    expect(u.quiet.msr).toBeNull();
    expect(u.read(MSR)).toBe(0x80 | 0x03); // DCD, with the deltas of DSR and CTS (which dropped)
    expect(u.quiet.msr).toBe(0x80);
    u.write(MCR, 0x08);
    u.read(MSR);
    // Input: LSR still reads without effect, with DR set; an overrun makes reading it clear OE.
    u.input('a');
    expect(u.quiet.lsr).toBe(0x61);
    u.input('bc'); // no FIFO: one byte fits
    expect(u.quiet.lsr).toBeNull();
    expect(u.read(LSR)).toBe(0x63);
    expect(u.quiet.lsr).toBe(0x61);
    u.read(THR);
    expect(u.quiet).toEqual({ thr: true, lsr: 0x60, msr: 0xb0 });
    const seen = changes;
    u.read(SCR); // no change, no call
    expect(changes).toBe(seen);
    stop();
    u.write(LCR, 0x80);
    expect(changes).toBe(seen);
    expect(() => u.watchQuiet(7 as never)).toThrow(TypeError);
  });

  it('transmits bytes handed over later as the THR writes would have, in one output call', () => {
    const outputs: string[] = [];
    const lines: string[] = [];
    const irqs: boolean[] = [];
    const u = new Uart16550({
      onOutput: (b) => outputs.push(Buffer.from(b).toString()),
      onLine: (l) => lines.push(l),
      onIrq: (level) => irqs.push(level),
    });
    u.write(IER, 0x02); // THRE interrupt on: pending at once (the transmitter is empty)
    expect(u.read(IIR) & 0x0f).toBe(0x02); // read: acknowledged
    u.transmitBytes(Buffer.from('ok\r\nmore'));
    expect(outputs).toEqual(['ok\r\nmore']);
    expect(lines).toEqual(['ok']);
    expect(u.transmitted).toBe(8);
    expect(u.captured).toBe('ok\r\nmore');
    // As after a THR write: the THRE interrupt is pending again.
    expect(irqs).toEqual([true, false, true]);
    expect(u.read(IIR) & 0x0f).toBe(0x02);
    u.transmitBytes(new Uint8Array(0));
    expect(outputs.length).toBe(1);
    expect(() => u.transmitBytes('x' as never)).toThrow(TypeError);
  });
});
