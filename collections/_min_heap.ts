/**
 * A binary min-heap of numbers (free KVM slot numbers: the lowest is
 * reused first).
 *
 * @module
 */

/** Numbers with O(log n) push and pop of the smallest. */
export class MinHeap {
  readonly #heap: number[] = [];

  /** Number of items. */
  get size(): number {
    return this.#heap.length;
  }

  /** Adds `n`. */
  push(n: number): void {
    const h = this.#heap;
    h.push(n);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (h[parent] <= h[i]) break;
      swap(h, parent, i);
      i = parent;
    }
  }

  /** Removes and returns the smallest number (`undefined` when empty). */
  pop(): number | undefined {
    const h = this.#heap;
    if (h.length === 0) return undefined;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && h[l] < h[m]) m = l;
        if (r < h.length && h[r] < h[m]) m = r;
        if (m === i) break;
        swap(h, m, i);
        i = m;
      }
    }
    return top;
  }
}

/**
 * Exchanges two heap elements (a plain temporary rather than a destructuring
 * swap, which allocates a throw-away array in every heap step).
 */
function swap(h: number[], a: number, b: number): void {
  const t = h[a];
  h[a] = h[b];
  h[b] = t;
}
