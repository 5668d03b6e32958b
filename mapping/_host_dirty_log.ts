/**
 * The host-side dirty log of one reservation: one bit per 4 KiB page of
 * guest physical address space, set by `GuestMemory` after each write while
 * tracking is on, from the main thread and from Workers alike (so it lives
 * in a `SharedArrayBuffer` that `GuestMemoryClient.share()` hands out).
 *
 * Layout: an `Int32` "tracking on" flag, an `Int32` "something marked"
 * flag (set after a bit that was clear is set, cleared by the collector
 * before it scans, so a collector with nothing to find skips the scan),
 * then the bitmap as `Uint32` words (bit i of word w is page 32w + i).
 *
 * Writers set bits after the write itself has landed (so a collector that
 * clears a bit never loses a write that is still to come), with
 * `Atomics.or` only when the bit is not already set; the collector takes
 * words with `Atomics.exchange`.
 *
 * @module
 */

import { type PageBitmap, PAGES_PER_CHUNK } from "../collections/_page_bitmap.ts";

const WORDS_PER_CHUNK = PAGES_PER_CHUNK / 32;

const HEADER_BYTES = 8;

/** Views of a host dirty log buffer (the same on every thread). */
export class HostDirtyLog {
  /** The shared buffer (header and bitmap). */
  readonly buffer: SharedArrayBuffer;
  /** `flag[0]` is 1 while tracking is on; `flag[1]` once a bit was set since the last drain. */
  readonly flag: Int32Array<SharedArrayBuffer>;
  /** The bitmap. */
  readonly words: Uint32Array<SharedArrayBuffer>;

  /**
   * Whether the buffer went to other threads (`GuestMemoryClient.share()`):
   * until then only this thread marks pages, and draining needs no atomics.
   */
  #shared = false;

  /** Views over `buffer` (from {@linkcode HostDirtyLog.create} on any thread). */
  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.flag = new Int32Array(buffer, 0, 2);
    this.words = new Uint32Array(buffer, HEADER_BYTES);
  }

  /** A new, empty log for `size` bytes of guest address space (tracking off). */
  static create(size: bigint): HostDirtyLog {
    const pages = Number((size + 4095n) >> 12n);
    return new HostDirtyLog(new SharedArrayBuffer(HEADER_BYTES + Math.ceil(pages / 32) * 4));
  }

  /** Whether `buffer` has the shape of a log (for `GuestMemoryClient.fromShare`). */
  static isLogBuffer(buffer: unknown): buffer is SharedArrayBuffer {
    return buffer instanceof SharedArrayBuffer && buffer.byteLength >= HEADER_BYTES &&
      (buffer.byteLength - HEADER_BYTES) % 4 === 0;
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
    markPages(this.flag, this.words, address, length);
  }

  /** Moves every set bit into `into` (keyed by page number) and clears it here. */
  drainInto(into: PageBitmap): void {
    if (this.#shared) {
      if (Atomics.exchange(this.flag, 1, 0) === 0) return;
    } else {
      if (this.flag[1] === 0) return;
      this.flag[1] = 0;
    }
    const words = this.words;
    for (let base = 0; base < words.length; base += WORDS_PER_CHUNK) {
      const end = Math.min(words.length, base + WORDS_PER_CHUNK);
      let chunk: Uint32Array | undefined;
      for (let i = base; i < end; i++) {
        if (words[i] === 0) continue;
        chunk ??= into.chunkWords(base / WORDS_PER_CHUNK);
        if (this.#shared) {
          chunk[i - base] |= Atomics.exchange(words, i, 0);
        } else {
          chunk[i - base] |= words[i];
          words[i] = 0;
        }
      }
    }
  }

  /** Clears every bit. */
  clear(): void {
    Atomics.store(this.flag, 1, 0);
    const words = this.words;
    for (let i = 0; i < words.length; i++) if (words[i] !== 0) Atomics.store(words, i, 0);
  }
}

/**
 * Sets the bits of the pages of `[address, address + length)` (length > 0)
 * in `words`, then the "something marked" flag (`flag[1]`) if a bit was new.
 */
export function markPages(
  flag: Int32Array<SharedArrayBuffer>,
  words: Uint32Array<SharedArrayBuffer>,
  address: number,
  length: number,
): void {
  const first = Math.floor(address / 4096);
  const last = Math.floor((address + length - 1) / 4096);
  let marked = false;
  for (let page = first; page <= last; page++) {
    const w = Math.floor(page / 32);
    const m = 1 << (page % 32);
    if ((words[w] & m) === 0) {
      Atomics.or(words, w, m);
      marked = true;
    }
  }
  if (marked && Atomics.load(flag, 1) === 0) Atomics.store(flag, 1, 1);
}
