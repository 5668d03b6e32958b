/**
 * The one binary search of the library.
 *
 * @module
 */

/**
 * The first index in `[from, to)` of `items` for which `pred(item, key)`
 * holds, or `to` when none does. `pred` must be monotone over the range
 * (false for a prefix, true for the rest).
 *
 * Hot paths pass a module-level predicate and the value it compares
 * against as `key`, so a search allocates nothing.
 */
export function lowerBound<T, K>(
  items: ArrayLike<T>,
  pred: (item: T, key: K) => boolean,
  key: K,
  from = 0,
  to: number = items.length,
): number {
  let lo = from;
  let hi = to;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (pred(items[mid], key)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * The first index in `[from, to)` for which `pred(index, key)` holds (`pred`
 * monotone), or `to`: the same search over data that is not an array of
 * items, such as records laid out in a typed array.
 */
export function lowerBoundIndex<K>(
  from: number,
  to: number,
  pred: (index: number, key: K) => boolean,
  key: K,
): number {
  let lo = from;
  let hi = to;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (pred(mid, key)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
