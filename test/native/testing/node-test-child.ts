// Run by acquire.test.ts under plain node: describeDevice picks node:test when there is no jest.
import { test } from 'node:test';

import { describeDevice } from '../../../lib/testing';

describeDevice('gpu', 'a role no machine here plays', (device) => {
  test('never runs', () => {
    throw new Error(`ran with ${device().bdf}`);
  });
});
