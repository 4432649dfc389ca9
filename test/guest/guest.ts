/**
 * The flat test guests (test/guest/*.S): loading their binaries, and a machine to run them on.
 *
 * `npm run build` assembles them into build/guest (scripts/build-guest.sh). Where that is missing
 * or older than the source, they are assembled into a temporary directory with the system
 * assembler, which also works inside the lab guest (the repository is read-only there).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.join(__dirname, '..', '..');

/** The binary of guest `name` (e2e, bench, intx, hammer), linked at {@link GUEST_LOAD}. */
export function guestBinary(name: 'e2e' | 'bench' | 'intx' | 'hammer'): Buffer {
  const src = path.join(root, 'test', 'guest', `${name}.S`);
  const built = path.join(root, 'build', 'guest', `${name}.bin`);
  if (fs.existsSync(built) && fs.statSync(built).mtimeMs >= fs.statSync(src).mtimeMs)
    return fs.readFileSync(built);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-bridge-guest-'));
  try {
    const obj = path.join(dir, `${name}.o`);
    const bin = path.join(dir, `${name}.bin`);
    execFileSync('as', ['--32', '-o', obj, src]);
    execFileSync('ld', [
      '-m',
      'elf_i386',
      `-Ttext=0x${GUEST_LOAD.toString(16)}`,
      '--oformat',
      'binary',
      '-o',
      bin,
      obj,
    ]);
    return fs.readFileSync(bin);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Where the guests are linked and loaded. */
export const GUEST_LOAD = 0x1000;
/** The guests' parameter block and result block (u32 slots). */
export const PARAMS = 0x7000;
export const RESULTS = 0x7100;
/** The flat GDT the machine writes for the guests: null, code 0x08, data 0x10. */
export const GDT = 0x500;
/** The IDT base the guest fills itself. */
export const IDT = 0x9000;
/** The port the guests write their checkpoints to. */
export const CHECKPOINT_PORT = 0x501;
/** Guest RAM size (from guest-physical 0). */
export const RAM_SIZE = 2 * 1024 * 1024;
