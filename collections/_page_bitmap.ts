/**
 * A sparse set of guest pages (page number = guest physical address / 4096):
 * one bit per page in chunks of {@linkcode PAGES_PER_CHUNK} pages (128 MiB
 * of guest memory per 4 KiB chunk), made on first use. Dirty bits from KVM
 * slots, from host writes and from slots deleted while logging all land in
 * one of these.
 *
 * Each chunk also has a summary: one bit per word, set when the word may
 * hold a page (every non-zero word has its bit; a bit may outlive its
 * page). Walking the pages follows the summary, so a sparse chunk costs
 * the words that hold pages, not a test of every word: with 1,000 pages
 * spread over 1 GiB, testing each of the 8,192 words mispredicted a branch
 * per non-zero word and was most of an incremental restore's bookkeeping
 * (`bench/snapshot_bench.ts`, `restore_dirty_1000`).
 *
 * @module
 */

/** Pages per chunk: 2^15 (32-bit words: 1024). */
export const PAGES_PER_CHUNK = 1 << 15;
/** Words of pages per chunk; the summary words follow them in the same array. */
export const WORDS_PER_CHUNK = PAGES_PER_CHUNK >>> 5;
const SUMMARY_WORDS = WORDS_PER_CHUNK >>> 5;

/** Set bits of 32-bit words, counted. */
function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/**
 * ORs `bits` (non-zero) into word `i` of `chunk` (from
 * {@linkcode PageBitmap.chunkWords}) and sets the word's summary bit.
 */
export function orChunkWord(chunk: Int32Array, i: number, bits: number): void {
  chunk[i] |= bits;
  chunk[WORDS_PER_CHUNK + (i >>> 5)] |= 1 << (i & 31);
}

/** A reusable list of runs of pages: `count` (first page, pages) pairs in `pairs`. */
export class PageRuns {
  pairs: Float64Array;
  count = 0;

  /** Room for `capacity` runs at first. */
  constructor(capacity: number) {
    this.pairs = new Float64Array(2 * Math.max(capacity, 1));
  }

  /** Makes room for `count` runs at least (the pairs are not kept). */
  grow(count: number): void {
    let room = this.pairs.length >> 1;
    while (room < count) room *= 2;
    this.pairs = new Float64Array(2 * room);
  }
}

/** A sparse bitmap of page numbers (non-negative safe integers). */
export class PageBitmap {
  /**
   * Per chunk: {@linkcode WORDS_PER_CHUNK} words of pages, then the summary.
   * Signed words: a word with bit 31 set stays a small integer in V8.
   */
  readonly #chunks = new Map<number, Int32Array>();
  /** The chunk indexes, ascending (kept sorted as chunks are made). */
  readonly #order: number[] = [];

  #chunk(index: number): Int32Array {
    let chunk = this.#chunks.get(index);
    if (chunk === undefined) {
      chunk = new Int32Array(WORDS_PER_CHUNK + SUMMARY_WORDS);
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
    orChunkWord(chunk, bit >>> 5, 1 << (bit & 31));
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
  orWords(firstPage: number, words: Uint32Array | Int32Array, pages: number): void {
    const count = Math.min(words.length, Math.ceil(pages / 32));
    if (firstPage % 32 === 0) {
      for (let i = 0; i < count; i++) {
        let w = words[i] | 0;
        if (w === 0) continue;
        const left = pages - i * 32;
        if (left < 32) w &= (1 << left) - 1;
        if (w === 0) continue;
        const page = firstPage + i * 32;
        const chunk = this.#chunk(Math.floor(page / PAGES_PER_CHUNK));
        orChunkWord(chunk, (page % PAGES_PER_CHUNK) >>> 5, w);
      }
      return;
    }
    for (let i = 0; i < count; i++) {
      let w = words[i] | 0;
      while (w !== 0) {
        const b = 31 - Math.clz32(w & -w);
        w &= w - 1;
        const index = i * 32 + b;
        if (index < pages) this.set(firstPage + index);
      }
    }
  }

  /**
   * The words of chunk `index` (pages `index * PAGES_PER_CHUNK` and up,
   * bit i of word w is page `32 w + i`), made on first use. Write them with
   * {@linkcode orChunkWord} only (it keeps the summary).
   */
  chunkWords(index: number): Int32Array {
    return this.#chunk(index);
  }

  /** ORs `bits` into 32-bit word `wordIndex` (pages `32 * wordIndex` and up). */
  orWord(wordIndex: number, bits: number): void {
    if (bits === 0) return;
    const chunk = this.#chunk(Math.floor(wordIndex / WORDS_PER_CHUNK));
    orChunkWord(chunk, wordIndex % WORDS_PER_CHUNK, bits);
  }

  /** Adds every page of `other`. */
  orBitmap(other: PageBitmap): void {
    for (const [index, chunk] of other.#chunks) {
      let mine: Int32Array | undefined;
      forEachWord(chunk, 0, WORDS_PER_CHUNK, (i, w) => {
        mine ??= this.#chunk(index);
        orChunkWord(mine, i, w);
      });
    }
  }

  /** How many pages are in the set. */
  get size(): number {
    let n = 0;
    for (const chunk of this.#chunks.values()) {
      forEachWord(chunk, 0, WORDS_PER_CHUNK, (_, w) => {
        n += popcount(w);
      });
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
    const { pairs, count } = this.runs(fromPage, toPage, new PageRuns(64));
    for (let k = 0; k < count; k++) visit(pairs[2 * k], pairs[2 * k + 1]);
  }

  /**
   * The runs of consecutive pages in `[fromPage, toPage)` into `into`
   * (grown when they do not fit), which is returned.
   */
  runs(fromPage: number, toPage: number, into: PageRuns): PageRuns {
    let count = this.runsInto(fromPage, toPage, into.pairs, 0);
    if (2 * count > into.pairs.length) {
      into.grow(count);
      count = this.runsInto(fromPage, toPage, into.pairs, 0);
    }
    into.count = count;
    return into;
  }

  /**
   * Writes the runs of consecutive pages in `[fromPage, toPage)`, ascending,
   * into `out` as (first page, count) pairs from pair `at` on; returns `at`
   * plus the number of pairs. Pairs past the end of `out` are counted but
   * not written (grow it and call again). No closure per run or word, for
   * incremental restores: it follows the summary, and the words at the ends
   * of the range are masked instead of testing every page.
   */
  runsInto(fromPage: number, toPage: number, out: Float64Array, at: number): number {
    const order = this.#order;
    const room = out.length >> 1;
    let runStart = -1;
    let runEnd = -1;
    for (let k = 0; k < order.length; k++) {
      const base = order[k] * PAGES_PER_CHUNK;
      if (base + PAGES_PER_CHUNK <= fromPage) continue;
      if (base >= toPage) break;
      const chunk = this.#chunks.get(order[k])!;
      const from = Math.max(fromPage - base, 0);
      const to = Math.min(toPage - base, PAGES_PER_CHUNK);
      const first = from >>> 5;
      const last = (to + 31) >>> 5; // words [first, last)
      for (let j = first >>> 5; j <= (last - 1) >>> 5; j++) {
        let s = chunk[WORDS_PER_CHUNK + j];
        while (s !== 0) {
          const i = j * 32 + 31 - Math.clz32(s & -s);
          s &= s - 1;
          if (i < first || i >= last) continue;
          let w = chunk[i];
          if (i === first) w &= -1 << (from & 31);
          if (i === last - 1 && (to & 31) !== 0) w &= (1 << (to & 31)) - 1;
          const wordPage = base + i * 32;
          if (w === -1 && wordPage === runEnd) {
            runEnd += 32;
            continue;
          }
          while (w !== 0) {
            const page = wordPage + 31 - Math.clz32(w & -w);
            w &= w - 1;
            if (page === runEnd) {
              runEnd++;
              continue;
            }
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
        }
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
   * Calls `visit(firstPage, words, pages)` for each chunk with pages
   * (ascending): bit i of `words` is page `firstPage + i`, for `pages` pages.
   */
  forEachChunk(visit: (firstPage: number, words: Uint32Array, pages: number) => void): void {
    for (const index of this.#order) {
      const chunk = this.#chunks.get(index)!;
      let any = false;
      forEachWord(chunk, 0, WORDS_PER_CHUNK, () => {
        any = true;
      });
      if (any) {
        const words = new Uint32Array(chunk.buffer, 0, WORDS_PER_CHUNK);
        visit(index * PAGES_PER_CHUNK, words, PAGES_PER_CHUNK);
      }
    }
  }

  /**
   * Empties the set. The chunks are zeroed (the words the summary names)
   * and kept (at most 33 KiB per GiB of guest memory seen): making them
   * again costs an off-heap allocation each, which showed in incremental
   * restores.
   */
  clear(): void {
    for (const chunk of this.#chunks.values()) {
      for (let j = 0; j < SUMMARY_WORDS; j++) {
        let s = chunk[WORDS_PER_CHUNK + j];
        if (s === 0) continue;
        chunk[WORDS_PER_CHUNK + j] = 0;
        while (s !== 0) {
          chunk[j * 32 + 31 - Math.clz32(s & -s)] = 0;
          s &= s - 1;
        }
      }
    }
  }
}

/** Calls `visit(i, word)` for the non-zero words `[first, last)` of `chunk`, by its summary. */
function forEachWord(
  chunk: Int32Array,
  first: number,
  last: number,
  visit: (i: number, word: number) => void,
): void {
  for (let j = first >>> 5; j <= (last - 1) >>> 5; j++) {
    let s = chunk[WORDS_PER_CHUNK + j];
    while (s !== 0) {
      const i = j * 32 + 31 - Math.clz32(s & -s);
      s &= s - 1;
      if (i >= first && i < last && chunk[i] !== 0) visit(i, chunk[i]);
    }
  }
}
