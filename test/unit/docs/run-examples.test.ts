// The memory-model examples, run as they are shown: they import vfio-bridge/memory, which never
// loads the addon, so they run in the pure TypeScript suite.
import { runExample } from '../../support/run-example';

describe('documentation examples of the memory model', () => {
  test('memory.ts: priorities, valid sizes, unassigned accesses and info mtree', () => {
    const out = runExample('memory.ts');
    expect(out).toContain('add ram at 0');
    expect(out).toContain('add regs at 3000');
    expect(out).toContain('12345678 cafe');
    expect(out).toContain('access-invalid-size read at 3000: read-all-ones');
    expect(out).toContain('unassigned read at 8000: read-all-ones');
    expect(out.join('\n')).toMatch(/0000000000003000-0000000000003fff \(prio 1, i\/o\): regs/);
  });

  test('memory-device.ts: a ram-device region under an io overlay, with a listener', () => {
    const out = runExample('memory-device.ts');
    expect(out).toContain('map msix-table fe000000 256');
    expect(out).toContain('map 0000:00:03.0 BAR 0 mmaps[0] fe000100 3840');
    expect(out).toContain('1234');
  });
});
