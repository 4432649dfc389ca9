// Steps and turns (lib/base/steps.ts): a turn lets due timers run, wherever it is taken.
import * as fs from 'node:fs';

import { runSteps, runStepsAsync, turn } from '../../../lib/base/steps';

/** Spins for `ms` milliseconds: the loop is held, and a timer set before falls due. */
function hold(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end);
}

/** Runs `body` inside an I/O callback (the poll phase), where a thread-pool job ends. */
function inIoCallback(body: () => Promise<string[]>): Promise<string[]> {
  return new Promise((resolve, reject) => {
    fs.stat(__filename, () => void body().then(resolve, reject));
  });
}

describe('turn', () => {
  it('lets a due timer run first when taken in an I/O callback', async () => {
    const order = await inIoCallback(async () => {
      const seen: string[] = [];
      setTimeout(() => seen.push('timer'), 1);
      hold(5);
      await turn();
      seen.push('after the turn');
      return seen;
    });
    expect(order).toEqual(['timer', 'after the turn']);
  });

  it('lets a due timer run first when taken in a setImmediate callback', async () => {
    const order = await new Promise<string[]>((resolve) => {
      setImmediate(() => {
        const seen: string[] = [];
        setTimeout(() => seen.push('timer'), 1);
        hold(5);
        void turn().then(() => resolve([...seen, 'after the turn']));
      });
    });
    expect(order).toEqual(['timer', 'after the turn']);
  });
});

describe('runSteps and runStepsAsync', () => {
  function* steps(log: string[]): Generator<string, number> {
    log.push('a');
    yield 'a';
    log.push('b');
    yield 'b';
    log.push('c');
    return 3;
  }

  it('run the same steps to the same result, the async form with a due timer run between steps', async () => {
    const sync: string[] = [];
    expect(runSteps(steps(sync))).toBe(3);
    const stepped: string[] = [];
    const timers: number[] = [];
    const gen = steps(stepped);
    const result = await inIoCallback(async () => {
      setTimeout(() => timers.push(stepped.length), 1);
      hold(5);
      return [String(await runStepsAsync(gen))];
    });
    expect(result).toEqual(['3']);
    expect(stepped).toEqual(sync);
    // The first step ran in the I/O callback; the due timer ran before the second.
    expect(timers).toEqual([1]);
  });
});
