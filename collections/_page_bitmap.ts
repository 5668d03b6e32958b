/**
 * A sparse set of guest pages (page number = guest physical address / 4096):
 * one bit per page in chunks of {@linkcode PAGES_PER_CHUNK} pages (128 MiB
 * of guest memory per 4 KiB chunk), made on first use. Dirty bits from KVM
 * slots, from host writes and from slots deleted while logging all land in
 * one of these.
 *
 * @module
 */

/** Pages per chunk: 2^15 (32-bit words: 1024). */
export const PAGES_PER_CHUNK = 1 << 15;
const WORDS_PER_CHUNK = PAGES_PER_CHUNK >>> 5;

/** Set bits of 32-bit words, counted. */
function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** A sparse bitmap of page numbers (non-negative safe integers). */
export class PageBitmap {
  readonly #chunks = new Map<number, Uint32Array>();
  /** The chunk indexes, ascending (kept sorted as chunks are made). */
  readonly #order: number[] = [];

  #chunk(index: number): Uint32Array {
    let chunk = this.#chunks.get(index);
    if (chunk === undefined) {
      chunk = new Uint32Array(WORDS_PER_CHUNK);
      this.#chunks.set(index, chunk);
      const order = this.#order;
      let at = order.length;
      while (at > 0 && order[at - 1] > index) at--;
      order.splice(at, 0, index);
    }
    return chunk;
  }

  /** Adds page `page`. */
  set(page: number): void {
    const chunk = this.#chunk(Math.floor(page / PAGES_PER_CHUNK));
    const bit = page % PAGES_PER_CHUNK;
    chunk[bit >>> 5] |= 1 << (bit & 31);
  }

  /** Adds pages `[first, first + count)`. */
  setRange(first: number, count: number): void {
    const end = first + count;
    let page = first;
    for (; page < end && page % 32 !== 0; page++) this.set(page);
    for (; page + 32 <= end; page += 32) this.orWord(page / 32, -1);
    for (; page < end; page++) this.set(page);
  }

  /** Whether page `page` is in the set. */
  has(page: number): boolean {
    const chunk = this.#chunks.get(Math.floor(page / PAGES_PER_CHUNK));
    if (chunk === undefined) return false;
    const bit = page % PAGES_PER_CHUNK;
    return (chunk[bit >>> 5] & (1 << (bit & 31))) !== 0;
  }

  /**
   * Adds the pages of a little-endian bitmap (bit i of `words` is page
   * `firstPage + i`), `pages` of them. Word-aligned starts OR whole words.
   */
  orWords(firstPage: number, words: Uint32Array, pages: number): void {
    const count = Math.min(words.length, Math.ceil(pages / 32));
    if (firstPage % 32 === 0) {
      for (let i = 0; i < count; i++) {
        let w = words[i];
        if (w === 0) continue;
        const left = pages - i * 32;
        if (left < 32) w &= (1 << left) - 1;
        const page = firstPage + i * 32;
        const chunk = this.#chunk(Math.floor(page / PAGES_PER_CHUNK));
        chunk[(page % PAGES_PER_CHUNK) >>> 5] |= w;
      }
      return;
    }
    for (let i = 0; i < count; i++) {
      let w = words[i];
      while (w !== 0) {
        const b = 31 - Math.clz32(w & -w);
        w &= w - 1;
        const index = i * 32 + b;
        if (index < pages) this.set(firstPage + index);
      }
    }
  }

  /** The words of chunk `index` (pages `index * PAGES_PER_CHUNK` and up), made on first use. */
  chunkWords(index: number): Uint32Array {
    return this.#chunk(index);
  }

  /** ORs `bits` into 32-bit word `wordIndex` (pages `32 * wordIndex` and up). */
  orWord(wordIndex: number, bits: number): void {
    const chunk = this.#chunk(Math.floor(wordIndex / WORDS_PER_CHUNK));
    chunk[wordIndex % WORDS_PER_CHUNK] |= bits;
  }

  /** Adds every page of `other`. */
  orBitmap(other: PageBitmap): void {
    for (const [index, chunk] of other.#chunks) {
      const mine = this.#chunk(index);
      for (let i = 0; i < WORDS_PER_CHUNK; i++) mine[i] |= chunk[i];
    }
  }

  /** How many pages are in the set. */
  get size(): number {
    let n = 0;
    for (const chunk of this.#chunks.values()) {
      for (let i = 0; i < WORDS_PER_CHUNK; i++) if (chunk[i] !== 0) n += popcount(chunk[i]);
    }
    return n;
  }

  /**
   * Calls `visit(firstPage, count)` for each run of consecutive pages in
   * `[fromPage, toPage)`, in ascending order.
   */
  forEachRun(
    fromPage: number,
    toPage: number,
    visit: (firstPage: number, count: number) => void,
  ): void {
    const indexes = [...this.#chunks.keys()].sort((a, b) => a - b);
    let runStart = -1;
    let runEnd = -1;
    for (const index of indexes) {
      const base = index * PAGES_PER_CHUNK;
      if (base + PAGES_PER_CHUNK <= fromPage || base >= toPage) continue;
      const chunk = this.#chunks.get(index)!;
      for (let i = 0; i < WORDS_PER_CHUNK; i++) {
        let w = chunk[i];
        while (w !== 0) {
          const b = 31 - Math.clz32(w & -w);
          w &= w - 1;
          const page = base + i * 32 + b;
          if (page < fromPage || page >= toPage) continue;
          if (page === runEnd) {
            runEnd++;
          } else {
            if (runStart >= 0) visit(runStart, runEnd - runStart);
            runStart = page;
            runEnd = page + 1;
          }
        }
      }
    }
    if (runStart >= 0) visit(runStart, runEnd - runStart);
  }

  /**
   * Writes the runs of consecutive pages in `[fromPage, toPage)`, ascending,
   * into `out` as (first page, count) pairs from pair `at` on, runs longer
   * than `maxCount` pages split; returns `at` plus the number of pairs. Pairs
   * past the end of `out` are counted but not written (grow it and call
   * again). No closure per run, for incremental restores.
   */
  runsInto(
    fromPage: number,
    toPage: number,
    maxCount: number,
    out: Float64Array,
    at: number,
  ): number {
    const order = this.#order;
    const room = out.length >> 1;
    let runStart = -1;
    let runEnd = -1;
    for (let k = 0; k < order.length; k++) {
      const base = order[k] * PAGES_PER_CHUNK;
      if (base + PAGES_PER_CHUNK <= fromPage) continue;
      if (base >= toPage) break;
      const chunk = this.#chunks.get(order[k])!;
      const first = fromPage > base ? (fromPage - base) >>> 5 : 0;
      const last = toPage < base + PAGES_PER_CHUNK ? (toPage - base + 31) >>> 5 : WORDS_PER_CHUNK;
      for (let i = first; i < last; i++) {
        let w = chunk[i];
        if (w === 0) continue;
        if (w === -1 >>> 0 && base + i * 32 === runEnd && runEnd - runStart + 32 <= maxCount) {
          const page = base + i * 32;
          if (page >= fromPage && page + 32 <= toPage) {
            runEnd += 32;
            continue;
          }
        }
        do {
          const b = 31 - Math.clz32(w & -w);
          w &= w - 1;
          const page = base + i * 32 + b;
          if (page < fromPage || page >= toPage) continue;
          if (page === runEnd && runEnd - runStart < maxCount) {
            runEnd++;
          } else {
            if (runStart >= 0) {
              if (at < room) {
                out[2 * at] = runStart;
                out[2 * at + 1] = runEnd - runStart;
              }
              at++;
            }
            runStart = page;
            runEnd = page + 1;
          }
        } while (w !== 0);
      }
    }
    if (runStart >= 0) {
      if (at < room) {
        out[2 * at] = runStart;
        out[2 * at + 1] = runEnd - runStart;
      }
      at++;
    }
    return at;
  }

  /** The pages of `[fromPage, toPage)` in the set, ascending. */
  pages(fromPage = 0, toPage = Number.MAX_SAFE_INTEGER): number[] {
    const out: number[] = [];
    this.forEachRun(fromPage, toPage, (first, count) => {
      for (let i = 0; i < count; i++) out.push(first + i);
    });
    return out;
  }

  /**
   * Calls `visit(firstPage, words, pages)` for each chunk (ascending): bit
   * i of `words` is page `firstPage + i`, for `pages` pages.
   */
  forEachChunk(visit: (firstPage: number, words: Uint32Array, pages: number) => void): void {
    const indexes = [...this.#chunks.keys()].sort((a, b) => a - b);
    for (const index of indexes) {
      const words = this.#chunks.get(index)!;
      if (words.some((w) => w !== 0)) visit(index * PAGES_PER_CHUNK, words, PAGES_PER_CHUNK);
    }
  }

  /**
   * Empties the set. The chunks are zeroed and kept (at most 32 KiB per GiB
   * of guest memory seen): making them again costs an off-heap allocation
   * each, which showed in incremental restores.
   */
  clear(): void {
    for (const chunk of this.#chunks.values()) chunk.fill(0);
  }
}
