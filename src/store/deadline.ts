/**
 * `operation`, or the error `late()` makes when it has not settled within `ms`. The MongoDB driver's
 * own timeouts do not bound every wait (a hung server, a pool waiting for a connection), and a caller
 * must be answered (503) within its bound; an answer that comes later is dropped.
 */
export function withDeadline<T>(operation: Promise<T>, ms: number, late: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(late()), ms);
  });
  return Promise.race([operation, deadline]).finally(() => clearTimeout(timer));
}
