'use strict';
// Run by helpers.test.ts under plain node, so node:test: a role the lab does not provide, from the
// built entry point that users import.
const { test } = require('node:test');
const { describeDevice } = require('../../../dist/testing');

describeDevice('missing', 'a role the lab does not provide', (device) => {
  test('never runs', () => {
    throw new Error(`ran with ${device().bdf}`);
  });
});
