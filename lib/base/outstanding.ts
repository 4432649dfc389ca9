/**
 * Work in flight, and a promise of its end: what a vCPU whose access started the work waits for
 * before it runs on. @internal
 */
export class Outstanding {
  #count = 0;
  #waiters: (() => void)[] = [];
  #pending: Promise<void> | null = null;

  /** One more piece of work in flight; the returned function ends it (once, however it ended). */
  begin(): () => void {
    this.#count++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      if (--this.#count === 0) this.#settled();
    };
  }

  /** Resolves once everything begun so far has ended; null when nothing is in flight. */
  get pending(): Promise<void> | null {
    if (this.#count === 0) return null;
    this.#pending ??= new Promise<void>((resolve) => this.#waiters.push(resolve));
    return this.#pending;
  }

  #settled(): void {
    this.#pending = null;
    for (const w of this.#waiters.splice(0)) w();
  }
}
