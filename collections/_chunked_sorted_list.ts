/**
 * An ordered list kept as a list of small chunks, so that inserting or
 * removing one item costs about the same with ten items as with ten
 * thousand (a plain array's `splice` moves every later element, and with
 * object elements V8 makes that slow: ~30 µs at 10,000 items).
 *
 * Positions are found with a monotone predicate (false for a prefix of the
 * list, true for the rest) by binary search, first over chunks, then inside
 * one. Internal helper.
 *
 * @module
 */

import { lowerBound } from "./_lower_bound.ts";

/**
 * Items per chunk at most (a full chunk splits in two halves). 64 rather
 * than 128: an insert or removal shifts up to a chunk of items, and at
 * 10,000 regions the shifting was an eighth of a region change (bench row
 * 3, region scaling); searches stay short, and repeated ones start from
 * the last answer (`SortedRangeList`).
 */
const MAX_CHUNK = 64;

/** The search a {@linkcode ChunkedSortedList} runs over its chunks (reused: no allocation). */
interface ChunkProbe<T, K> {
  pred: (item: T, key: K) => boolean;
  key: K;
}

const lastSatisfies = <T, K>(chunk: T[], probe: ChunkProbe<T, K>): boolean =>
  probe.pred(chunk[chunk.length - 1], probe.key);

/** A position in a {@linkcode ChunkedSortedList}. */
export interface ListCursor {
  /** Chunk index. */
  chunk: number;
  /** Index inside the chunk. */
  index: number;
}

/** An ordered list with near-constant insert and remove at a found position. */
export class ChunkedSortedList<T> {
  #chunks: T[][] = [];
  #length = 0;
  #flat: T[] | undefined = [];
  /** With tracking on: chunks changed since the last `takeChanges`, and whether chunks came or went. */
  #changed: Set<readonly T[]> | undefined;
  #reshaped = false;
  readonly #probe: ChunkProbe<T, unknown> = { pred: () => false, key: undefined };

  /** Number of items. */
  get length(): number {
    return this.#length;
  }

  /** The cursor of the first item for which `pred` holds (`pred` monotone), or the end. */
  firstWhere(pred: (item: T) => boolean): ListCursor;
  /**
   * The same with `pred(item, key)`: hot paths pass a module-level predicate
   * and the value it compares against, instead of a new closure per search.
   */
  firstWhere<K>(pred: (item: T, key: K) => boolean, key: K): ListCursor;
  firstWhere<K>(pred: (item: T, key: K | undefined) => boolean, key?: K): ListCursor {
    const chunks = this.#chunks;
    // First chunk whose last item satisfies pred, then the item inside it.
    const probe = this.#probe as ChunkProbe<T, K | undefined>;
    probe.pred = pred;
    probe.key = key;
    const c = lowerBound(chunks, lastSatisfies, probe);
    if (c === chunks.length) return { chunk: chunks.length, index: 0 };
    return { chunk: c, index: lowerBound(chunks[c], pred, key) };
  }

  /** The item at `cursor`, or `undefined` at the end. */
  at(cursor: ListCursor): T | undefined {
    return this.#chunks[cursor.chunk]?.[cursor.index];
  }

  /** The item just before `cursor`, or `undefined` at the start (chunks are never empty). */
  before(cursor: ListCursor): T | undefined {
    if (cursor.index > 0) return this.#chunks[cursor.chunk]?.[cursor.index - 1];
    const previous = this.#chunks[cursor.chunk - 1];
    return previous?.[previous.length - 1];
  }

  /** The cursor after `cursor`. */
  next(cursor: ListCursor): ListCursor {
    const chunk = this.#chunks[cursor.chunk];
    if (chunk !== undefined && cursor.index + 1 < chunk.length) {
      return { chunk: cursor.chunk, index: cursor.index + 1 };
    }
    return { chunk: cursor.chunk + 1, index: 0 };
  }

  /** Inserts `item` before the item at `cursor` (or at the end). */
  insertAt(cursor: ListCursor, item: T): void {
    const chunks = this.#chunks;
    this.#length++;
    this.#flat = undefined;
    if (chunks.length === 0) {
      const first = [item];
      chunks.push(first);
      this.#changed?.add(first);
      this.#reshaped = true;
      return;
    }
    let c = cursor.chunk;
    let i = cursor.index;
    if (c === chunks.length) {
      // At the end: append to the last chunk.
      c = chunks.length - 1;
      i = chunks[c].length;
    }
    const chunk = chunks[c];
    this.#changed?.add(chunk);
    // Shift by hand: `splice` allocates its (empty) result array and goes
    // through a slow generic path, several times the cost for a short chunk.
    chunk.push(item);
    for (let j = chunk.length - 1; j > i; j--) chunk[j] = chunk[j - 1];
    chunk[i] = item;
    if (chunk.length > MAX_CHUNK) {
      const tail = chunk.splice(MAX_CHUNK >> 1);
      chunks.splice(c + 1, 0, tail);
      this.#changed?.add(tail);
      this.#reshaped = true;
    }
  }

  /** Removes the item at `cursor`. */
  removeAt(cursor: ListCursor): void {
    const chunk = this.#chunks[cursor.chunk];
    if (chunk === undefined || cursor.index >= chunk.length) return;
    // By hand rather than `splice`, as in insertAt.
    for (let j = cursor.index + 1; j < chunk.length; j++) chunk[j - 1] = chunk[j];
    chunk.pop();
    this.#changed?.add(chunk);
    if (chunk.length === 0) {
      this.#chunks.splice(cursor.chunk, 1);
      this.#reshaped = true;
    }
    this.#length--;
    this.#flat = undefined;
  }

  /** The chunks, in order (each sorted; do not modify). */
  chunks(): readonly (readonly T[])[] {
    return this.#chunks;
  }

  /**
   * Starts recording which chunks change (for a mirror of the list kept
   * elsewhere, such as a Worker-shared table). Everything counts as changed
   * at first.
   */
  trackChanges(): void {
    this.#changed = new Set(this.#chunks);
    this.#reshaped = true;
  }

  /**
   * The chunks changed since the last call (possibly removed ones too), and
   * whether the sequence of chunks changed (a split, an emptied chunk).
   */
  takeChanges(): { readonly chunks: ReadonlySet<readonly T[]>; readonly reshaped: boolean } {
    const changes = { chunks: this.#changed ?? new Set<readonly T[]>(), reshaped: this.#reshaped };
    this.#changed = new Set();
    this.#reshaped = false;
    return changes;
  }

  /** All items in order (cached until the next change). */
  toArray(): readonly T[] {
    this.#flat ??= this.#chunks.flat();
    return this.#flat;
  }
}
