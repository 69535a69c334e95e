// A counting semaphore for --filelimit: at most N files are open at once. A request beyond the
// limit waits for a slot (first come, first served) instead of failing with EMFILE, but only for
// a bounded time: held slots must not turn into a queue that never moves.

export type Release = () => void;

export class FileLimit {
  private open = 0;
  /** Waiters in arrival order (a Set keeps it, and lets one that gives up leave in O(1)). */
  private readonly waiting = new Set<(release: Release) => void>();

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`file limit must be a positive integer, got ${limit}`);
  }

  /** Files open right now, and requests waiting for a slot. */
  get inUse(): number {
    return this.open;
  }

  get queued(): number {
    return this.waiting.size;
  }

  /**
   * Resolves with a release function once a slot is free (call it exactly once), or with
   * undefined if none came free within `waitMs`.
   */
  acquire(waitMs: number): Promise<Release | undefined> {
    if (this.open < this.limit) {
      this.open++;
      return Promise.resolve(this.releaser());
    }
    return new Promise((resolve) => {
      const waiter = (release: Release): void => {
        clearTimeout(timer);
        resolve(release);
      };
      const timer = setTimeout(() => {
        this.waiting.delete(waiter);
        resolve(undefined);
      }, waitMs);
      // A waiting request has its own socket keeping the process up; the timer need not.
      timer.unref();
      this.waiting.add(waiter);
    });
  }

  private releaser(): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.values().next();
      if (next.done) {
        this.open--;
        return;
      }
      // Hand the slot straight to the next waiter, so the count never dips and overshoots.
      this.waiting.delete(next.value);
      next.value(this.releaser());
    };
  }
}
