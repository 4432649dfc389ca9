// The PC's legacy ports (pc-legacy-io.ts): put on the port space in one commit.
import { AddressSpace, MemoryRegion } from '../../../lib/memory';
import { addLegacyPorts } from '../../../lib/vmm/pc-legacy-io';
import { PciRootBus } from '../../../lib/vmm/pci-root-bus';
import { Uart16550 } from '../../../lib/vmm/uart';

describe('addLegacyPorts', () => {
  it('puts the UART, the host bridge, the i8042, the CMOS clock and port 0x80 on the bus in one commit', () => {
    const root = MemoryRegion.container('io', 0x10000);
    const io = new AddressSpace('io', root, { log: null });
    let commits = 0;
    const added: number[] = [];
    io.addMemoryListener({ commit: () => commits++, regionAdd: (s) => added.push(s.addr) });
    commits = 0; // the listener's own first commit
    added.length = 0;
    addLegacyPorts(root, { uart: new Uart16550(), host: new PciRootBus(), onI8042Reset: () => undefined });
    expect(commits).toBe(1);
    expect(added.sort((a, b) => a - b)).toEqual([0x60, 0x64, 0x70, 0x80, 0xcf8, 0x3f8].sort((a, b) => a - b));
  });
});
