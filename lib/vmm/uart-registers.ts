/**
 * The 16550's registers and their bits, as the datasheet (and Linux's serial_reg.h) names them:
 * the offsets from the port base, and the bits of each register the model (uart.ts) uses.
 */
// Register offsets (DLAB = LCR bit 7 selects the divisor latch at 0 and 1).
export const RBR_THR_DLL = 0;
export const IER_DLM = 1;
export const IIR_FCR = 2;
export const LCR = 3;
export const MCR = 4;
export const LSR = 5;
export const MSR = 6;
export const SCR = 7;

export const LCR_DLAB = 0x80;

export const IER_RDI = 0x01;
export const IER_THRI = 0x02;
export const IER_RLSI = 0x04;
export const IER_MSI = 0x08;

export const IIR_NO_INT = 0x01;
export const IIR_MSI = 0x00;
export const IIR_THRI = 0x02;
export const IIR_RDI = 0x04;
export const IIR_RLSI = 0x06;
export const IIR_CTI = 0x0c;
export const IIR_FIFO_ENABLED = 0xc0;

export const FCR_ENABLE = 0x01;
export const FCR_CLEAR_RX = 0x02;
export const FCR_TRIGGER_SHIFT = 6;
export const RX_TRIGGER = [1, 4, 8, 14];

export const LSR_DR = 0x01;
export const LSR_OE = 0x02;
export const LSR_THRE = 0x20;
export const LSR_TEMT = 0x40;

export const MCR_DTR = 0x01;
export const MCR_RTS = 0x02;
export const MCR_OUT1 = 0x04;
export const MCR_OUT2 = 0x08;
export const MCR_LOOP = 0x10;

export const MSR_DCTS = 0x01;
export const MSR_DDSR = 0x02;
export const MSR_TERI = 0x04;
export const MSR_DDCD = 0x08;
export const MSR_CTS = 0x10;
export const MSR_DSR = 0x20;
export const MSR_RI = 0x40;
export const MSR_DCD = 0x80;
/** Outside loopback the modem lines read as a terminal that is present and ready (as QEMU's serial). */
export const MSR_IDLE = MSR_DCD | MSR_DSR | MSR_CTS;

export const FIFO_SIZE = 16;
