// The NVMe guide's example, run as it is shown: a test written with vfio-bridge/testing that brings
// up an NVMe controller's admin queue, identifies it, creates one I/O queue pair and reads a page,
// compared with the backing file. The lab's nvme (the project's device set, or one given with
// `vfio-bridge lab --device nvme`) plays the role; VFIO_BRIDGE_HIL_NVME_FILE names its file.
import * as path from 'node:path';

jest.requireActual(path.join(__dirname, '../../docs/examples/nvme.test.ts'));

test('in the lab the backing file is named, so the read is compared, not only completed', () => {
  if (process.env.VFIO_BRIDGE_LAB !== '1' || !/(^|,)nvme=/.test(process.env.VFIO_BRIDGE_HIL_DEVICES ?? ''))
    return;
  expect(process.env.VFIO_BRIDGE_HIL_NVME_FILE).toMatch(/\/nvme\.img$/);
});
