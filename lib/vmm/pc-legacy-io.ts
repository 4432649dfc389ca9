/**
 * The PC's legacy port devices on the I/O bus: the 16550 console at 0x3f8, configuration mechanism
 * #1 and the reset control register (0xcf8-0xcff), the keyboard controller's reset line (0x60/0x64),
 * the CMOS clock (0x70/0x71) and the POST port 0x80 Linux uses as an I/O delay.
 */
import { MemoryRegion, transaction } from '../memory';
import { CMOS_INDEX_PORT, CmosRtc } from './cmos-rtc';
import { I8042_COMMAND_PORT, I8042_DATA_PORT, I8042ResetPort } from './i8042';
import { PCI_CONFIG_PORT, type PciRootBus } from './pci-root-bus';
import { COM1_PORT } from './uart';

const POST_PORT = 0x80;

/** addLegacyPorts: put the UART, the host bridge and the small PC ports on `io`. */
export function addLegacyPorts(
  io: MemoryRegion,
  parts: { uart: { region(): MemoryRegion }; host: PciRootBus; onI8042Reset: () => void },
): void {
  const i8042 = new I8042ResetPort({ onReset: parts.onI8042Reset });
  const rtc = new CmosRtc();
  // One commit: the port space's flat view is rendered once, not once a port.
  transaction(() => {
    io.addSubregion(parts.uart.region(), COM1_PORT);
    io.addSubregion(parts.host.region(), PCI_CONFIG_PORT);
    io.addSubregion(i8042.region(I8042_DATA_PORT), I8042_DATA_PORT);
    io.addSubregion(i8042.region(I8042_COMMAND_PORT), I8042_COMMAND_PORT);
    io.addSubregion(rtc.region(), CMOS_INDEX_PORT);
    // Linux writes port 0x80 as an I/O delay; a PC ignores it.
    io.addSubregion(MemoryRegion.io('post', 1, { read: () => 0xff, write: () => undefined }), POST_PORT);
  });
}
