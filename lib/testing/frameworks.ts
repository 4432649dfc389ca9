/**
 * The few calls the helpers make on a test framework: jest's globals (`describe`, `test`,
 * `test.skip`, `beforeAll`, `afterAll`; vitest has the same), or node:test, loaded only when asked
 * for or when no such globals exist.
 */
import { ArgRangeError } from '../base/error';

export type Body = () => unknown | Promise<unknown>;

/** What describeDevice and useDevice register through. */
export interface Framework {
  /** Which framework: `jest` (jest's or vitest's globals) or `node:test`. */
  readonly name: 'jest' | 'node:test';
  describe(name: string, fn: () => void): void;
  test(name: string, fn: Body, timeoutMs?: number): void;
  /** A skipped test that names `reason` (in its title, and where the framework has one, its reason). */
  skip(name: string, reason: string): void;
  before(fn: Body, timeoutMs?: number): void;
  after(fn: Body, timeoutMs?: number): void;
}

export type FrameworkName = Framework['name'];

interface JestGlobals {
  describe: (name: string, fn: () => void) => void;
  test: ((name: string, fn: Body, timeout?: number) => void) & { skip: (name: string, fn: Body) => void };
  beforeAll: (fn: Body, timeout?: number) => void;
  afterAll: (fn: Body, timeout?: number) => void;
}

function jestGlobals(): JestGlobals | undefined {
  const g = globalThis as unknown as Partial<JestGlobals>;
  return typeof g.describe === 'function' &&
    typeof g.test === 'function' &&
    typeof g.test.skip === 'function' &&
    typeof g.beforeAll === 'function' &&
    typeof g.afterAll === 'function'
    ? (g as JestGlobals)
    : undefined;
}

function jest(g: JestGlobals): Framework {
  return {
    name: 'jest',
    describe: (name, fn) => g.describe(name, fn),
    test: (name, fn, t) => g.test(name, fn, t),
    skip: (name) => g.test.skip(name, () => undefined),
    before: (fn, t) => g.beforeAll(fn, t),
    after: (fn, t) => g.afterAll(fn, t),
  };
}

function nodeTest(): Framework {
  // Loaded here, not at the top: under jest there is no node:test run to join.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const t = require('node:test') as typeof import('node:test');
  const timeout = (ms: number | undefined) => (ms === undefined ? {} : { timeout: ms });
  return {
    name: 'node:test',
    describe: (name, fn) => void t.describe(name, fn),
    test: (name, fn, ms) => void t.test(name, timeout(ms), async () => void (await fn())),
    skip: (name, reason) => void t.test(name, { skip: reason }, () => undefined),
    before: (fn, ms) => t.before(async () => void (await fn()), timeout(ms)),
    after: (fn, ms) => t.after(async () => void (await fn()), timeout(ms)),
  };
}

/**
 * framework: the one named (or given: another runner's calls, shaped as {@link Framework}), else
 * jest's globals when they exist, else node:test.
 * @throws ArgRangeError for an unknown name, or 'jest' without jest's globals
 */
export function framework(name?: FrameworkName | Framework): Framework {
  if (typeof name === 'object' && name !== null) return name;
  if (name === 'node:test') return nodeTest();
  const g = jestGlobals();
  if (name === 'jest' && g === undefined) throw new ArgRangeError("framework 'jest': no jest globals here");
  if (name !== undefined && name !== 'jest') throw new ArgRangeError(`unknown framework ${String(name)}`);
  return g !== undefined ? jest(g) : nodeTest();
}
