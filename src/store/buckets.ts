/**
 * Time buckets for aggregation, shared by every store so they answer the same buckets. Widths are
 * whole seconds, rounded up to whole minutes from a minute on and to whole hours from an hour on,
 * and buckets start at multiples of their width: then a bucket is a union of the store's per-minute
 * or per-hour rollups and its figures equal the raw computation exactly.
 */
export const MAX_BUCKETS = 2000;

export interface BucketPlan {
  bucketSeconds: number;
  /** First bucket's start: a multiple of bucketSeconds, at or before the asked start. */
  from: number;
  to: number;
}

export function planBuckets(from: number, to: number, buckets: number): BucketPlan {
  const wanted = Math.min(Math.max(1, Math.floor(buckets)), MAX_BUCKETS);
  let width = Math.max(1, Math.ceil((to - from) / wanted));
  if (width >= 3600) width = Math.ceil(width / 3600) * 3600;
  else if (width >= 60) width = Math.ceil(width / 60) * 60;
  let start = Math.floor(from / width) * width;
  // Aligning the start down can add one bucket; keep the count within what was asked.
  while (Math.ceil((to - start) / width) > wanted) {
    width = width >= 3600 ? width + 3600 : width >= 60 ? width + 60 : width + 1;
    start = Math.floor(from / width) * width;
  }
  return { bucketSeconds: width, from: start, to };
}

/** The rollup width a bucket width can be built from, or undefined for raw rows. */
export function rollupFor(bucketSeconds: number, widths: readonly number[]): number | undefined {
  return [...widths].sort((a, b) => b - a).find((width) => bucketSeconds % width === 0);
}
