/**
 * Driving QEMU's edu device's DMA engine, through a machine's bus or through a mapping of its
 * BAR 0, for the lab tests that DMA.
 */
import type { Mapping } from '../../../lib';
import type { SystemAddressSpaces } from '../../../lib/pci';

/** edu's DMA buffer, in the device's own address space. */
export const EDU_BUFFER = 0x40000;

const SRC = 0x80;
const DST = 0x88;
const COUNT = 0x90;
const CMD = 0x98;
const CMD_START = 1;
const CMD_TO_RAM = 2;

/** edu's 8-byte DMA registers, however they are reached. */
interface EduRegisters {
  write64(offset: number, value: bigint): void;
  read64(offset: number): bigint;
}

/**
 * One edu DMA of `count` bytes (at most 4095: a 4096-byte transfer crashes QEMU 7.2's edu): from
 * IOVA `iova` into edu's buffer, or from the buffer to `iova` when `toRam`. Waits until edu clears
 * its start bit; edu runs the transfer from a 100 ms virtual-time timer.
 */
async function transfer(regs: EduRegisters, iova: number, count: number, toRam: boolean): Promise<void> {
  if (count > 4095) throw new RangeError('edu transfers of 4096 bytes crash QEMU 7.2: keep them <= 4095');
  regs.write64(SRC, BigInt(toRam ? EDU_BUFFER : iova));
  regs.write64(DST, BigInt(toRam ? iova : EDU_BUFFER));
  regs.write64(COUNT, BigInt(count));
  regs.write64(CMD, BigInt(CMD_START | (toRam ? CMD_TO_RAM : 0)));
  const deadline = Date.now() + 20_000;
  while (regs.read64(CMD) & BigInt(CMD_START)) {
    if (Date.now() > deadline) throw new Error('edu DMA did not finish within 20 s');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** {@link transfer} through `bus`, edu's BAR 0 at `bar0`. */
export function eduDma(
  bus: SystemAddressSpaces,
  bar0: number,
  iova: number,
  count: number,
  toRam: boolean,
): Promise<void> {
  const regs: EduRegisters = {
    write64: (o, v) => bus.mmioWrite(bar0 + o, 8, v),
    read64: (o) => bus.mmioRead(bar0 + o, 8) as bigint,
  };
  return transfer(regs, iova, count, toRam);
}

/** {@link transfer} through a mapping of edu's BAR 0. */
export function eduDmaMapped(bar0: Mapping, iova: number, count: number, toRam: boolean): Promise<void> {
  return transfer(bar0, iova, count, toRam);
}

/** A recognisable pattern of `n` bytes. */
export function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return out;
}
