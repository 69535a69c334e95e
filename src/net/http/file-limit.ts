// A counting semaphore for --filelimit: at most N files are open at once. A request beyond the
// limit waits for a slot (first come, first served) instead of failing with EMFILE.

export type Release = () => void;

export class FileLimit {
  private open = 0;
  private readonly waiting: Array<(release: Release) => void> = [];

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`file limit must be a positive integer, got ${limit}`);
  }

  /** Files open right now, and requests waiting for a slot. */
  get inUse(): number {
    return this.open;
  }

  get queued(): number {
    return this.waiting.length;
  }

  /** Resolves with a release function once a slot is free; call it exactly once. */
  acquire(): Promise<Release> {
    if (this.open < this.limit) {
      this.open++;
      return Promise.resolve(this.releaser());
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private releaser(): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      // Hand the slot straight to the next waiter, so the count never dips and overshoots.
      if (next) next(this.releaser());
      else this.open--;
    };
  }
}
