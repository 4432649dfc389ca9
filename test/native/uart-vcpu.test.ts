// The console's registers served on the vCPU threads (lib/vmm/uart-vcpu.ts), through the exit
// table the threads serve from: ExitTable.serve does on this thread what a vCPU thread does for an
// exit, and the port space's dispatch is what a hand-off to JavaScript does. Whatever the guest does
// in between, the model sees every THR write in order, and the table offers a register only while
// the model's state lets it go.
import { AddressSpace, ExitTable, MemoryRegion } from '../../lib';
import { COM1_PORT, Uart16550 } from '../../lib/vmm';
import { ExitTableListener } from '../../lib/vmm/exit-table-listener';
import { UartOnVcpuThreads } from '../../lib/vmm/uart-vcpu';
import { until } from './helpers';

const THR = COM1_PORT;
const IER = COM1_PORT + 1;
const IIR = COM1_PORT + 2;
const LCR = COM1_PORT + 3;
const MCR = COM1_PORT + 4;
const LSR = COM1_PORT + 5;
const MSR = COM1_PORT + 6;

function setup() {
  const output: string[] = [];
  const uart = new Uart16550({ onOutput: (b) => output.push(Buffer.from(b).toString()) });
  const served = new UartOnVcpuThreads(uart);
  const root = MemoryRegion.container('io', 0x10000);
  const io = new AddressSpace('io', root);
  const table = new ExitTable();
  const listener = new ExitTableListener(table, 'pio', () => null);
  const off = io.addMemoryListener(listener);
  root.addSubregion(served.region(), COM1_PORT);
  /** A guest's byte write to THR as a vCPU thread serves it: true when it needed no JavaScript. */
  const vcpuWrite = (port: number, b: number): boolean => {
    if (table.serve('pio', port, 1, true, BigInt(b)) !== null) return true;
    io.write(port, 1, b); // handed to JavaScript
    return false;
  };
  const vcpuRead = (port: number): { value: number; here: boolean } => {
    const r = table.serve('pio', port, 1, false);
    return r !== null
      ? { value: Number(r.value), here: true }
      : { value: Number(io.read(port, 1)), here: false };
  };
  return {
    uart,
    served,
    io,
    table,
    output,
    vcpuWrite,
    vcpuRead,
    dispose() {
      off();
      listener.clear();
      served.close();
      table.close();
      io.close();
    },
  };
}

describe('the UART on the vCPU threads', () => {
  test('the polled console: THR writes and LSR reads never reach JavaScript, and the bytes come out in order', async () => {
    const s = setup();
    try {
      for (const b of Buffer.from('Linux version 6.12\n')) {
        expect(s.vcpuRead(LSR)).toEqual({ value: 0x60, here: true });
        expect(s.vcpuWrite(THR, b)).toBe(true);
        expect(s.vcpuRead(MSR)).toEqual({ value: 0xb0, here: true });
      }
      expect(s.uart.transmitted).toBe(0); // still in the sink
      // The sink wakes the loop; the model gets the bytes in one piece.
      await until(() => s.output.length > 0);
      expect(s.output).toEqual(['Linux version 6.12\n']);
      expect(s.uart.transmitted).toBe(19);
    } finally {
      s.dispose();
    }
  });

  test('an access JavaScript serves sees every byte written before it; a state change takes the registers back at once', () => {
    const s = setup();
    try {
      s.vcpuWrite(IER, 0x02); // JavaScript: THRE interrupt on
      expect(s.vcpuRead(IIR).value & 0x0f).toBe(0x02); // acknowledged
      for (const b of Buffer.from('ab')) expect(s.vcpuWrite(THR, b)).toBe(true);
      // IIR is JavaScript's: the model first takes 'ab', and their THRE interrupt is what it reports.
      expect(s.vcpuRead(IIR)).toEqual({ value: 0x02, here: false });
      expect(s.uart.transmitted).toBe(2);
      expect(s.output).toEqual(['ab']);
      // The divisor latch: THR writes are the model's until it is closed again.
      s.vcpuWrite(LCR, 0x83);
      expect(s.table.lookup('pio', THR, 1, true)).toBeNull();
      expect(s.vcpuWrite(THR, 0x01)).toBe(false); // DLL
      expect(s.uart.transmitted).toBe(2);
      s.vcpuWrite(LCR, 0x03);
      expect(s.vcpuWrite(THR, 0x63)).toBe(true);
      // Loopback: written bytes are received; nothing is served on the thread meanwhile.
      s.vcpuWrite(MCR, 0x18); // takes 'c' first, then loops
      expect(s.uart.transmitted).toBe(3);
      // The modem lines changed: MSR's deltas clear on read, so the first read is the model's.
      expect(s.vcpuRead(MSR)).toEqual({ value: 0x83, here: false });
      expect(s.vcpuRead(MSR)).toEqual({ value: 0x80, here: true });
      expect(s.vcpuWrite(THR, 0x41)).toBe(false);
      expect(s.vcpuRead(LSR)).toEqual({ value: 0x61, here: true }); // received: DR, still constant
      expect(s.vcpuRead(THR)).toEqual({ value: 0x41, here: false }); // RBR is JavaScript's
      s.vcpuWrite(MCR, 0x08);
      expect(s.vcpuRead(LSR)).toEqual({ value: 0x60, here: true });
      // Input that overruns: reading LSR clears OE, so it is JavaScript's until then.
      s.uart.input('xyz');
      expect(s.vcpuRead(LSR)).toEqual({ value: 0x63, here: false });
      expect(s.vcpuRead(LSR)).toEqual({ value: 0x61, here: true });
      expect(s.output.join('')).toBe('abc');
    } finally {
      s.dispose();
    }
  });

  test('moved in the port space, the registers follow; closed, writes come to the model', () => {
    const s = setup();
    try {
      const region = s.io.root.subregions[0]!;
      s.io.root.removeSubregion(region);
      expect(s.table.counts.pio).toBe(0);
      s.io.root.addSubregion(region, 0x2f8);
      expect(s.table.serve('pio', 0x2fd, 1, false)?.value).toBe(0x60n);
      expect(s.table.serve('pio', LSR, 1, false)).toBeNull();
      expect(s.table.serve('pio', 0x2f8, 1, true, 0x7an)).not.toBeNull();
      s.served.close(); // takes the 'z' first
      expect(s.uart.transmitted).toBe(1);
      expect(s.table.serve('pio', 0x2f8, 1, true, 0x7an)).toBeNull();
    } finally {
      s.dispose();
    }
  });
});
