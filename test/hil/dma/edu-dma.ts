/** Driving QEMU's edu device's DMA engine through the machine's bus, for the DMA lab tests. */
import type { SystemAddressSpaces } from '../../../lib/pci';

/** edu's DMA buffer, in the device's own address space. */
export const EDU_BUFFER = 0x40000;

const SRC = 0x80;
const DST = 0x88;
const COUNT = 0x90;
const CMD = 0x98;
const CMD_START = 1;
const CMD_TO_RAM = 2;

/**
 * One edu DMA of `count` bytes (at most 4095: a 4096-byte transfer crashes QEMU 7.2's edu): from
 * IOVA `iova` into edu's buffer, or from the buffer to `iova` when `toRam`. Waits until edu clears
 * its start bit; edu runs the transfer from a 100 ms virtual-time timer.
 */
export async function eduDma(
  bus: SystemAddressSpaces,
  bar0: number,
  iova: number,
  count: number,
  toRam: boolean,
): Promise<void> {
  if (count > 4095) throw new RangeError('edu transfers of 4096 bytes crash QEMU 7.2: keep them <= 4095');
  bus.mmioWrite(bar0 + SRC, 8, BigInt(toRam ? EDU_BUFFER : iova));
  bus.mmioWrite(bar0 + DST, 8, BigInt(toRam ? iova : EDU_BUFFER));
  bus.mmioWrite(bar0 + COUNT, 8, BigInt(count));
  bus.mmioWrite(bar0 + CMD, 8, BigInt(CMD_START | (toRam ? CMD_TO_RAM : 0)));
  const deadline = Date.now() + 20_000;
  while ((bus.mmioRead(bar0 + CMD, 8) as bigint) & BigInt(CMD_START)) {
    if (Date.now() > deadline) throw new Error('edu DMA did not finish within 20 s');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A recognisable pattern of `n` bytes. */
export function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return out;
}
