/**
 * The `vfio-bridge` command line as a library (the `vfio-bridge/cli` entry point): run it with
 * your own streams, environment and abort signal, or extend its commander program.
 */
export { buildProgram, run } from './program';
export type { CliIo } from './io';
export { EXIT_FAILED, EXIT_OK, EXIT_USAGE } from './errors';
