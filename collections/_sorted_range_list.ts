/**
 * A list of disjoint ranges kept in address order: region mappings, device
 * memory mappings, KVM memory slots and the recording partition's map.
 *
 * @module
 */

import { ChunkedSortedList, type ListCursor } from "./_chunked_sorted_list.ts";

/** How to read an item's half-open range `[start, end)`. */
export interface RangeKeys<T> {
  /** First address of `item`. */
  start(item: T): bigint;
  /** One past the last address of `item`. */
  end(item: T): bigint;
}

/**
 * An insert overlapped an item (`overlap`), or a removal cut through one
 * (`partialRemoval`). The list is unchanged; `existing` is the item in the
 * way. Callers turn it into their own subsystem's error.
 */
export class RangeListError extends Error {
  /** What went wrong. */
  readonly kind: "overlap" | "partialRemoval";
  /** The item that overlaps, or that is only partly inside the removal. */
  readonly existing: unknown;

  /** Creates the error. */
  constructor(kind: "overlap" | "partialRemoval", existing: unknown) {
    super(kind === "overlap" ? "range overlaps an existing range" : "range cuts through a range");
    this.name = "RangeListError";
    this.kind = kind;
    this.existing = existing;
  }
}

interface Probe<T> {
  readonly keys: RangeKeys<T>;
  at: bigint;
}

// Search predicates, module-level so a search allocates no closure; the
// probe carries the keys and the address.
const endsAbove = <T>(item: T, probe: Probe<T>): boolean => probe.keys.end(item) > probe.at;

/**
 * Disjoint ranges in address order, with insert, removal and look-up in
 * O(log n) whatever the number of items (a {@linkcode ChunkedSortedList}
 * underneath). Empty ranges are never stored.
 */
export class SortedRangeList<T> {
  readonly #keys: RangeKeys<T>;
  readonly #probe: Probe<T>;
  #list = new ChunkedSortedList<T>();
  /** The last search's answer (never modified: callers get it as it is). */
  #finger: ListCursor = { chunk: 0, index: 0 };

  /** An empty list reading ranges with `keys`. */
  constructor(keys: RangeKeys<T>) {
    this.#keys = keys;
    this.#probe = { keys, at: 0n };
  }

  /** Number of items. */
  get length(): number {
    return this.#list.length;
  }

  /** All items in address order (cached until the next change; do not modify). */
  toArray(): readonly T[] {
    return this.#list.toArray();
  }

  /** The item containing `address`, if any. */
  find(address: bigint): T | undefined {
    const item = this.#list.at(this.#firstEndingAbove(address));
    return item !== undefined && this.#keys.start(item) <= address ? item : undefined;
  }

  /** The first item overlapping `[start, end)`, if any. */
  firstOverlapping(start: bigint, end: bigint): T | undefined {
    if (start >= end) return undefined;
    const item = this.#list.at(this.#firstEndingAbove(start));
    return item !== undefined && this.#keys.start(item) < end ? item : undefined;
  }

  /** Every item overlapping `[start, end)`, in address order. */
  overlapping(start: bigint, end: bigint): T[] {
    const found: T[] = [];
    if (start >= end) return found;
    const list = this.#list;
    for (let c = this.#firstEndingAbove(start);; c = list.next(c)) {
      const item = list.at(c);
      if (item === undefined || this.#keys.start(item) >= end) break;
      found.push(item);
    }
    return found;
  }

  /**
   * Inserts `item` (a non-empty range). Throws {@linkcode RangeListError}
   * `overlap`, naming the first item in the way, and changes nothing.
   */
  insert(item: T): void {
    const start = this.#keys.start(item);
    const cursor = this.#firstEndingAbove(start);
    const next = this.#list.at(cursor);
    if (next !== undefined && this.#keys.start(next) < this.#keys.end(item)) {
      throw new RangeListError("overlap", next);
    }
    this.#list.insertAt(cursor, item);
  }

  /**
   * Removes every item inside `[start, end)` and returns them in order.
   * An item only partly inside is a {@linkcode RangeListError}
   * `partialRemoval`, thrown before anything changes.
   */
  removeWithin(start: bigint, end: bigint): T[] {
    const found = this.overlapping(start, end);
    for (const item of found) {
      if (this.#keys.start(item) < start || this.#keys.end(item) > end) {
        throw new RangeListError("partialRemoval", item);
      }
    }
    if (found.length === 0) return found;
    // Found again before each removal: removing the last item of a chunk
    // leaves a cursor past its end, and the next item is in the next chunk
    // (one cursor for all removals left the rest of the range behind). The
    // search after the first removal is the last answer, checked.
    for (let i = 0; i < found.length; i++) this.#list.removeAt(this.#firstEndingAbove(start));
    return found;
  }

  /** Removes `item` (which must be in the list). */
  remove(item: T): void {
    const cursor = this.#firstEndingAbove(this.#keys.start(item));
    if (this.#list.at(cursor) !== item) throw new RangeListError("partialRemoval", item);
    this.#list.removeAt(cursor);
  }

  /** Removes everything. */
  clear(): void {
    this.#list = new ChunkedSortedList<T>();
  }

  #firstEndingAbove(address: bigint): ListCursor {
    // The last answer first: callers often look at the same place again
    // (a region flipped back and forth, an item removed then inserted).
    // Whatever changed since, it is the answer when its item ends above
    // `address` and the item before it does not (the predicate is monotone).
    const list = this.#list;
    const finger = this.#finger;
    const item = list.at(finger);
    if (item !== undefined && this.#keys.end(item) > address) {
      const before = list.before(finger);
      if (before === undefined || this.#keys.end(before) <= address) return finger;
    }
    const probe = this.#probe;
    probe.at = address;
    return this.#finger = list.firstWhere(endsAbove, probe);
  }
}
