/**
 * Edits made here and reloads of what other instances changed, one at a time. A reload reads the
 * store and then replaces what is held in memory; run beside an edit, it could read the store before
 * the edit's write and land after it, undoing the edit here (a webhook deleted here came back, seen in
 * a test run on MongoDB). Each waits for the one before it; one that fails does not stop the next.
 */
export class Serial {
  #last: Promise<unknown> = Promise.resolve();

  run<T>(work: () => Promise<T>): Promise<T> {
    const result = this.#last.then(work, work);
    this.#last = result.catch(() => undefined);
    return result;
  }
}
