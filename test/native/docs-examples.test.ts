// The documentation's examples that need neither VFIO nor KVM, run as they are shown, with what
// they print checked (test/unit/docs/examples.test.ts type-checks them all).
import * as path from 'node:path';

const examples = path.join(__dirname, '../../docs/examples');

function run(name: string): string[] {
  const lines: string[] = [];
  const log = jest.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
    lines.push(args.map(String).join(' '));
  });
  try {
    jest.isolateModules(() => {
      jest.requireActual(path.join(examples, name));
    });
  } finally {
    log.mockRestore();
  }
  return lines;
}

describe('documentation examples that run anywhere', () => {
  test('memory.ts: priorities, valid sizes, unassigned accesses and info mtree', () => {
    const out = run('memory.ts');
    expect(out).toContain('add ram at 0');
    expect(out).toContain('add regs at 3000');
    expect(out).toContain('12345678 cafe');
    expect(out).toContain('unassigned read at 3000');
    expect(out).toContain('unassigned read at 8000');
    expect(out.join('\n')).toMatch(/0000000000003000-0000000000003fff \(prio 1, i\/o\): regs/);
  });

  test('memory-device.ts: a ram-device region under an io overlay, with a listener', () => {
    const out = run('memory-device.ts');
    expect(out).toContain('map msix-table fe000000 256');
    expect(out).toContain('map 0000:00:03.0 BAR 0 mmaps[0] fe000100 3840');
    expect(out).toContain('1234');
  });

  test('guest-ram.ts: a memfd seen through a DataView and through the memory model', () => {
    const out = run('guest-ram.ts');
    expect(out[0]).toBe('feedface');
    expect(out[1]).toMatch(/^fd \d+, 2097152 bytes at host address [0-9a-f]+$/);
  });
});
