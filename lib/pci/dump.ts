import type { AccessSize } from '../memory';

/**
 * formatDump: QEMU `xp /Nx`-style lines, 16 bytes per line, each line starting with the guest
 * physical address of its first value.
 */
export function formatDump(start: number, width: AccessSize, values: readonly (number | bigint)[]): string {
  const perLine = 16 / width;
  const lines: string[] = [];
  for (let i = 0; i < values.length; i += perLine) {
    const addr = (start + i * width).toString(16).padStart(16, '0');
    const cells = values.slice(i, i + perLine).map((v) => `0x${v.toString(16).padStart(width * 2, '0')}`);
    lines.push(`${addr}: ${cells.join(' ')}`);
  }
  return lines.join('\n');
}
