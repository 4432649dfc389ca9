/**
 * Work done in steps. A generator of steps runs at once (the synchronous form of an operation) or
 * with a turn of the event loop after each step (its asynchronous form), so that both forms do the
 * same work in the same order. And a list of undo steps that must all run, even when one throws.
 */

/**
 * A turn of the event loop: I/O and timers run before the promise settles. One setImmediate is not
 * always a turn: taken in an I/O callback (the poll phase, where a thread-pool job such as an async
 * open ends), it runs in the same iteration's check phase, before any timer. The second one runs
 * only after the next iteration's timers and poll.
 */
export function turn(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve)));
}

/** runSteps: runs steps at once, and returns what they return. @internal */
export function runSteps<T>(steps: Generator<unknown, T>): T {
  let step = steps.next();
  while (!step.done) step = steps.next();
  return step.value;
}

/**
 * runStepsAsync: runs steps with `between()` (a turn of the event loop unless given) awaited after
 * each. If `between` throws (an abort), the steps are ended with `return()`, so their `finally`
 * blocks close what was built, and its error is rethrown. @internal
 */
export async function runStepsAsync<T>(
  steps: Generator<unknown, T>,
  between: () => Promise<void> = turn,
): Promise<T> {
  let step = steps.next();
  while (!step.done) {
    try {
      await between();
    } catch (e) {
      steps.return(undefined as never);
      throw e;
    }
    step = steps.next();
  }
  return step.value;
}

/** stepErrors: runs every step even when one throws; returns what they threw, in order. @internal */
export function stepErrors(steps: readonly (() => void)[]): unknown[] {
  const errors: unknown[] = [];
  for (const s of steps) {
    try {
      s();
    } catch (e) {
      errors.push(e);
    }
  }
  return errors;
}

/** allSteps: runs every step even when one throws; throws the first error at the end. @internal */
export function allSteps(steps: readonly (() => void)[]): void {
  const errors = stepErrors(steps);
  if (errors.length > 0) throw errors[0];
}

/**
 * allStepsAsync: {@link allSteps} for steps that may return promises, with `between()` (a turn of
 * the loop unless given) awaited after each. @internal
 */
export async function allStepsAsync(
  steps: (() => void | Promise<void>)[],
  between: () => Promise<void> = turn,
): Promise<void> {
  const errors: unknown[] = [];
  for (const s of steps) {
    try {
      await s();
    } catch (e) {
      errors.push(e);
    }
    await between();
  }
  if (errors.length > 0) throw errors[0];
}
