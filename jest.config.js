'use strict';
// Three projects, run in this order by scripts/test.sh: pure TypeScript units, the native addon on
// memfd-backed fakes, and the hardware-in-the-loop suite on real vfio-pci (inside the lab guest).
const transform = { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }] };
const project = (name, extra = {}) => ({
  displayName: name,
  testEnvironment: 'node',
  transform,
  testMatch: [`<rootDir>/test/${name}/**/*.test.ts`],
  moduleFileExtensions: ['ts', 'js', 'json', 'node'],
  // docs/examples import the package by name, as a user does.
  moduleNameMapper: {
    '^vfio-bridge$': '<rootDir>/lib/index.ts',
    '^vfio-bridge/(memory|pci|vfio|kvm|dma|vmm|cli|testing)$': '<rootDir>/lib/$1/index.ts',
  },
  ...extra,
});
module.exports = {
  projects: [
    project('unit'),
    project('native'),
    project('hil', { setupFilesAfterEnv: ['<rootDir>/test/hil/jest-setup.ts'] }),
  ],
};
