// The documentation's examples that need the addon but no device, run as they are shown
// (test/unit/docs runs the memory-model ones and type-checks them all).
import { runExample } from '../support/run-example';

describe('documentation examples that need only the addon', () => {
  test('guest-ram.ts: a memfd seen through a DataView and through the memory model', () => {
    const out = runExample('guest-ram.ts');
    expect(out[0]).toBe('feedface');
    expect(out[1]).toMatch(/^fd \d+, 2097152 bytes at host address [0-9a-f]+$/);
  });
});
