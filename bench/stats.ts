/**
 * Statistics shared by bench/run.ts and the bench files, with no library
 * import (so that bench/run.ts loads none of the library).
 *
 * @module
 */

/**
 * The `q` quantile of sorted values, interpolating between the closest
 * ranks (as bench/baseline.c does): `quantile(sorted, 0.5)` is the median,
 * `quantile(sorted, 0.1)` the 10th percentile. `NaN` for no values.
 */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos);
  if (lo >= sorted.length - 1) return sorted[sorted.length - 1];
  return sorted[lo] + (pos - lo) * (sorted[lo + 1] - sorted[lo]);
}
