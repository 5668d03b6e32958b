/**
 * The host-side dirty log of one reservation: one bit per 4 KiB page of
 * guest physical address space, set by `GuestMemory` after each write while
 * tracking is on, from the main thread and from Workers alike (so it lives
 * in a `SharedArrayBuffer` that `GuestMemoryClient.share()` hands out).
 *
 * Layout: an `Int32` "tracking on" flag, an `Int32` "something marked"
 * flag (set after a bit that was clear is set, cleared by the collector
 * before it scans, so a collector with nothing to find skips the scan), an
 * `Int32` count of bitmap words, one reserved `Int32`, the bitmap as
 * `Int32` words (bit i of word w is page 32w + i), then its summary: bit i
 * of summary word j says word 32j + i may have bits (the collector visits
 * only those words, see `collections/_page_bitmap.ts`).
 *
 * Writers set page bits after the write itself has landed (so a collector
 * that clears a bit never loses a write that is still to come), with
 * `Atomics.or` only when the bit is not already set, then the word's
 * summary bit and the flag when they are clear. The collector takes the
 * flag, each summary word, then each word it names with `Atomics.exchange`:
 * a writer whose page bit is new sets the summary bit after it, so a word
 * the collector passes over is either already collected or named again for
 * the next collection.
 *
 * @module
 */

import { orChunkWord, type PageBitmap, WORDS_PER_CHUNK } from "../collections/_page_bitmap.ts";

const HEADER_INTS = 4;
const HEADER_BYTES = 4 * HEADER_INTS;

/** Views of a host dirty log buffer (the same on every thread). */
export class HostDirtyLog {
  /** The shared buffer (header and bitmap). */
  readonly buffer: SharedArrayBuffer;
  /**
   * `flag[0]` is 1 while tracking is on; `flag[1]` once a bit was set since
   * the last drain; `flag[2]` is the number of bitmap words.
   */
  readonly flag: Int32Array<SharedArrayBuffer>;
  /** The bitmap (signed: a word with bit 31 set stays a small integer in V8). */
  readonly words: Int32Array<SharedArrayBuffer>;
  /** One bit per bitmap word that may have bits. */
  readonly summary: Int32Array<SharedArrayBuffer>;

  /**
   * Whether the buffer went to other threads (`GuestMemoryClient.share()`):
   * until then only this thread marks pages, and draining needs no atomics.
   */
  #shared = false;

  /** Views over `buffer` (from {@linkcode HostDirtyLog.create} on any thread). */
  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.flag = new Int32Array(buffer, 0, HEADER_INTS);
    const count = this.flag[2];
    this.words = new Int32Array(buffer, HEADER_BYTES, count);
    this.summary = new Int32Array(buffer, HEADER_BYTES + 4 * count, summaryWords(count));
  }

  /** A new, empty log for `size` bytes of guest address space (tracking off). */
  static create(size: bigint): HostDirtyLog {
    const pages = Number((size + 4095n) >> 12n);
    const count = Math.ceil(pages / 32);
    const buffer = new SharedArrayBuffer(HEADER_BYTES + 4 * (count + summaryWords(count)));
    new Int32Array(buffer, 0, HEADER_INTS)[2] = count;
    return new HostDirtyLog(buffer);
  }

  /** Whether `buffer` has the shape of a log (for `GuestMemoryClient.fromShare`). */
  static isLogBuffer(buffer: unknown): buffer is SharedArrayBuffer {
    if (!(buffer instanceof SharedArrayBuffer) || buffer.byteLength < HEADER_BYTES) return false;
    const count = new Int32Array(buffer, 0, HEADER_INTS)[2];
    return count >= 0 && buffer.byteLength === HEADER_BYTES + 4 * (count + summaryWords(count));
  }

  /** Notes that the buffer is handed to other threads (from then on draining is atomic). */
  markShared(): void {
    this.#shared = true;
  }

  /** Whether tracking is on. */
  get tracking(): boolean {
    return Atomics.load(this.flag, 0) !== 0;
  }

  /** Turns tracking on or off. */
  setTracking(on: boolean): void {
    Atomics.store(this.flag, 0, on ? 1 : 0);
  }

  /** Marks the pages of `[address, address + length)` (length > 0). */
  mark(address: number, length: number): void {
    markPages(this, address, length);
  }

  /** Moves every set bit into `into` (keyed by page number) and clears it here. */
  drainInto(into: PageBitmap): void {
    const shared = this.#shared;
    if (shared) {
      if (Atomics.exchange(this.flag, 1, 0) === 0) return;
    } else {
      if (this.flag[1] === 0) return;
      this.flag[1] = 0;
    }
    const words = this.words;
    const summary = this.summary;
    let chunk: Int32Array | undefined;
    let chunkIndex = -1;
    for (let j = 0; j < summary.length; j++) {
      if (summary[j] === 0) continue;
      let s = shared ? Atomics.exchange(summary, j, 0) : summary[j];
      if (!shared) summary[j] = 0;
      while (s !== 0) {
        const i = j * 32 + 31 - Math.clz32(s & -s);
        s &= s - 1;
        const w = shared ? Atomics.exchange(words, i, 0) : words[i];
        if (w === 0) continue;
        if (!shared) words[i] = 0;
        const index = Math.floor(i / WORDS_PER_CHUNK);
        if (index !== chunkIndex) {
          chunk = into.chunkWords(index);
          chunkIndex = index;
        }
        orChunkWord(chunk!, i - index * WORDS_PER_CHUNK, w);
      }
    }
  }

  /** Clears every bit. */
  clear(): void {
    Atomics.store(this.flag, 1, 0);
    for (const words of [this.summary, this.words]) {
      for (let i = 0; i < words.length; i++) if (words[i] !== 0) Atomics.store(words, i, 0);
    }
  }
}

/** Summary words for `count` bitmap words. */
function summaryWords(count: number): number {
  return Math.ceil(count / 32);
}

/**
 * Sets the bits of the pages of `[address, address + length)` (length > 0)
 * in `log`, then each touched word's summary bit and the "something
 * marked" flag (`flag[1]`) where a page bit was new.
 */
export function markPages(log: HostDirtyLog, address: number, length: number): void {
  const words = log.words;
  const summary = log.summary;
  const first = Math.floor(address / 4096);
  const last = Math.floor((address + length - 1) / 4096);
  let marked = false;
  for (let page = first; page <= last; page++) {
    const w = Math.floor(page / 32);
    const m = 1 << (page % 32);
    if ((words[w] & m) === 0) {
      Atomics.or(words, w, m);
      const j = Math.floor(w / 32);
      const b = 1 << (w % 32);
      if ((Atomics.load(summary, j) & b) === 0) Atomics.or(summary, j, b);
      marked = true;
    }
  }
  if (marked && Atomics.load(log.flag, 1) === 0) Atomics.store(log.flag, 1, 1);
}
