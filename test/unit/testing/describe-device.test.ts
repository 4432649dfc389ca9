// The adapters on a recording framework: a role with no device registers one skipped test naming
// the reason, or where devices are required one failing test; useDevice's tests skip with it.
import { describeDevice, useDevice, type Framework } from '../../../lib/testing';

function recorder() {
  const log: string[] = [];
  const bodies = new Map<string, () => unknown>();
  const fw: Framework = {
    name: 'jest',
    describe: (name, fn) => {
      log.push(`describe ${name}`);
      fn();
    },
    test: (name, fn) => {
      log.push(`test ${name}`);
      bodies.set(name, fn);
    },
    skip: (name, reason) => void log.push(`skip ${name} [${reason}]`),
    before: () => void log.push('before'),
    after: () => void log.push('after'),
  };
  return { fw, log, bodies };
}

const reason =
  'no device plays role gpu: set VFIO_BRIDGE_DEVICES (e.g. gpu=8086:10d3), VFIO_BRIDGE_DEVICES_FILE or VFIO_BRIDGE_HIL_DEVICES';

test('describeDevice skips a missing role with the reason, without running the body', () => {
  const { fw, log } = recorder();
  const body = jest.fn();
  describeDevice('gpu', 'renders', body, { framework: fw, env: {} });
  expect(body).not.toHaveBeenCalled();
  expect(log).toEqual(['describe gpu: renders', `skip gpu: skipped: ${reason} [${reason}]`]);
});

test('where devices are required, the missing role is one failing test', () => {
  const { fw, log, bodies } = recorder();
  describeDevice('gpu', 'renders', jest.fn(), { framework: fw, env: { CI: 'true' } });
  expect(log).toEqual(['describe gpu: renders', 'test gpu: has its device (required here)']);
  expect(() => bodies.get('gpu: has its device (required here)')!()).toThrow(
    expect.objectContaining({
      code: 'ENODEVICE',
      message: expect.stringContaining('devices are required here'),
    }),
  );
});

test("useDevice's tests are skipped with the reason, and its device says why it is missing", () => {
  const { fw, log } = recorder();
  const gpu = useDevice('gpu', { framework: fw, env: {} });
  gpu.test('draws', () => undefined);
  expect(gpu.skip).toBe(reason);
  expect(log).toEqual([
    `skip gpu: skipped: ${reason} [${reason}]`,
    `skip draws (skipped: ${reason}) [${reason}]`,
  ]);
  expect(() => gpu.device).toThrow(
    expect.objectContaining({ code: 'ENODEVICE', message: `role gpu: ${reason}` }),
  );
});
