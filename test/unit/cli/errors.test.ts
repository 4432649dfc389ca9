// How the CLI reports what a command threw: usage errors exit 2, and an argument the library
// refused keeps the library's code, so a script can tell a bad width from a bad BDF.
import { ArgRangeError, ArgTypeError, VfioError } from '../../../lib/base/error';
import { EXIT_USAGE, reportFailure, UsageError } from '../../../lib/cli/errors';

describe('reportFailure', () => {
  test('an argument the library refused: exit 2, its ERR_* code, a hint', () => {
    expect(reportFailure(new ArgRangeError('width 3 is not 1, 2, 4 or 8'))).toEqual({
      exit: EXIT_USAGE,
      message: 'width 3 is not 1, 2, 4 or 8',
      hint: expect.stringContaining('vfio-bridge help'),
      code: 'ERR_OUT_OF_RANGE',
    });
    expect(reportFailure(new ArgTypeError('bdf must be a string')).code).toBe('ERR_INVALID_ARG_TYPE');
  });

  test("a RangeError without a code, and the command line's own errors: EUSAGE", () => {
    expect(reportFailure(new RangeError('too far'))).toMatchObject({ exit: EXIT_USAGE, code: 'EUSAGE' });
    expect(reportFailure(new UsageError('--svg needs a file name', 'give it one'))).toEqual({
      exit: EXIT_USAGE,
      message: '--svg needs a file name',
      hint: 'give it one',
      code: 'EUSAGE',
    });
  });

  test('a kernel failure keeps its errno name and is not a usage error', () => {
    const r = reportFailure(
      new VfioError({ op: 'VFIO_GROUP_GET_DEVICE_FD', errno: -16, code: 'EBUSY', message: 'busy' }),
    );
    expect(r.exit).not.toBe(EXIT_USAGE);
    expect(r.code).toBe('EBUSY');
  });
});
