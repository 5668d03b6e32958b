import { hostBytes } from "../ffi/_host_memory.ts";
import { type HostDirtyLog, markPages } from "../mapping/_host_dirty_log.ts";
import type { SharedTableReader } from "../mapping/_shared_table.ts";
import type { VaMapper } from "../mapping/_va_mapper.ts";
import { type GuestMemoryTable, WorkerTable } from "../mapping/_worker_table.ts";
import { GuestMemoryError } from "./guest_memory_error.ts";

const U64_MAX = (1n << 64n) - 1n;
const TWO_POW_64 = 1n << 64n;
/** Single-window reads and writes up to this length copy byte by byte (no view is made). */
const SMALL_COPY = 64;

/**
 * Guest memory is seen through views of fixed windows of the reservation
 * (2 MiB, aligned), made on first use and kept: the host address of a
 * guest address never changes (base + gpa), so a view stays valid whatever
 * the table says, and no view ever covers more than a window (one view
 * over a 1 TiB guest makes V8 collect garbage for "external memory
 * pressure"). The table decides what may be touched.
 */
const WINDOW_SIZE = 1 << 21;
/** Windows kept at most (16 GiB of views); past that the cache starts again. */
const MAX_WINDOWS = 8192;

/** Views of one window of the reservation. */
interface Window {
  /** First guest address of the window. */
  readonly start: number;
  /** One past its last (the reservation's end for the last window). */
  readonly end: number;
  readonly bytes: Uint8Array<ArrayBuffer>;
  readonly view: DataView<ArrayBuffer>;
  words32: Uint32Array<ArrayBuffer> | undefined;
  words64: BigUint64Array<ArrayBuffer> | undefined;
}

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return `${value}n`;
  return String(value);
}

/** `gpa` as a bigint; throws TypeError for wrong types, GuestMemoryError for negative or >= 2^64. */
function toAddress(gpa: unknown, length: bigint, write: boolean): bigint {
  let addr: bigint;
  if (typeof gpa === "bigint") {
    addr = gpa;
  } else if (typeof gpa === "number" && Number.isSafeInteger(gpa)) {
    addr = BigInt(gpa);
  } else {
    throw new TypeError(
      `guest address must be a bigint or a safe integer number, got ${describe(gpa)}`,
    );
  }
  if (addr < 0n || addr > U64_MAX) {
    throw GuestMemoryError.invalidAddress(addr, { address: addr, length, write });
  }
  return addr;
}

/** `length` as a bigint; throws TypeError for wrong types, RangeError when negative. */
function toLength(length: unknown): bigint {
  let len: bigint;
  if (typeof length === "bigint") {
    len = length;
  } else if (typeof length === "number" && Number.isSafeInteger(length)) {
    len = BigInt(length);
  } else {
    throw new TypeError(
      `length must be a bigint or a safe integer number, got ${describe(length)}`,
    );
  }
  if (len < 0n) throw new RangeError(`length must not be negative, got ${len}`);
  return len;
}

/** A fast-path address: `gpa` as a number when it is a safe non-negative integer, else -1. */
function fastAddress(gpa: bigint | number): number {
  if (typeof gpa === "number") {
    return gpa >= 0 && Number.isSafeInteger(gpa) ? gpa : -1;
  }
  if (typeof gpa === "bigint" && gpa >= 0n && gpa <= 0x1f_ffff_ffff_ffffn) return Number(gpa);
  return -1;
}

function badValue(type: string, range: string, value: unknown): RangeError {
  return new RangeError(`${type} value must be an integer in ${range}, got ${describe(value)}`);
}

function checkU8(value: number): void {
  if ((value & 0xff) !== value) throw badValue("u8", "0..255", value);
}

function checkU16(value: number): void {
  if ((value & 0xffff) !== value) throw badValue("u16", "0..65535", value);
}

function checkU32(value: number): void {
  if ((value >>> 0) !== value) throw badValue("u32", "0..4294967295", value);
}

function checkU64(value: bigint): void {
  if (typeof value !== "bigint" || value < 0n || value > U64_MAX) {
    throw badValue("u64", "0n..18446744073709551615n", value);
  }
}

let construct: (va: GuestMemoryTable, reader: SharedTableReader | undefined) => GuestMemory;

/** Makes a {@linkcode GuestMemory} over the main thread's table (internal: its constructor is private). */
export function newGuestMemory(va: VaMapper): GuestMemory {
  return construct(va, undefined);
}

/**
 * Makes a {@linkcode GuestMemory} in a Worker over the table a manager
 * shares (`buffer`) for its reservation at `base` of `size` bytes.
 */
export function newSharedGuestMemory(
  buffer: SharedArrayBuffer,
  base: bigint,
  size: bigint,
  name: string,
  dirty: SharedArrayBuffer | undefined,
): GuestMemory {
  const table = new WorkerTable(buffer, base, size, name, dirty);
  return construct(table, table.reader);
}

/**
 * Bounds-checked access to guest physical memory through the manager's host
 * address reservation ({@linkcode VaMapper}).
 *
 * Every access is checked against the reservation's table of active
 * mappings before any memory is touched, so a bad address raises a
 * {@linkcode GuestMemoryError} instead of killing the process with SIGSEGV
 * or SIGBUS. Checks run in this order and the first failure is reported:
 * `invalidAddress` (negative or >= 2^64), `misaligned` (atomics only),
 * `overflow` (the range wraps past 2^64), `outOfRange` (the range reaches
 * past the reservation), then, walking the range upward, `unmapped` (a byte
 * without an active mapping) or `readOnly` (a write to a read-only
 * mapping), whichever comes first. An access that fails copies nothing.
 *
 * Addresses are `bigint` or safe non-negative integer `number`s; other
 * values are a `TypeError`. A zero-length access succeeds without touching
 * memory when its address is at most the reservation size, whether or not
 * anything is mapped there, and is `outOfRange` otherwise.
 *
 * Multi-byte values are little-endian. An access may span adjacent
 * mappings. Because every mapping of a backing shares its pages, reads see
 * writes made through any other mapping of the same backing and vice versa.
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, GuestMemoryError, MemoryLayout } from "../mod.ts";
 * import assert from "node:assert/strict";
 * using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(1n << 30n, []));
 * const memory = manager.client().guestMemory();
 * memory.writeU32(0x1000n, 0xdeadbeef);
 * assert.equal(memory.readU32(0x1000n), 0xdeadbeef);
 * try {
 *   memory.readU8(0x40000000n);
 * } catch (err) {
 *   if (!(err instanceof GuestMemoryError)) throw err;
 *   assert.equal(err.message, "guest address 0x40000000 is outside guest memory 0x0-0x40000000");
 * }
 * ```
 */
export class GuestMemory {
  readonly #table: GuestMemoryTable;
  /** In a Worker: this accessor's reader slot in the manager's shared table. */
  readonly #reader: SharedTableReader | undefined;
  readonly #size: bigint;
  readonly #sizeNumber: number;
  /** Host address of guest address 0. */
  readonly #base: bigint;
  readonly #windows = new Map<number, Window>();
  /**
   * The last single-window access: `[#fastStart, #fastEnd)` is the part of
   * its table entry inside its window, valid while `#generation` matches
   * the table.
   */
  #fastStart = 0;
  #fastEnd = 0;
  #fastWritable = false;
  #fastWindow: Window | undefined;
  #generation = -1;
  #closed = false;
  #scratch = new Uint8Array(8);
  #scratchView = new DataView(this.#scratch.buffer);
  /** `[0]` is non-zero while dirty tracking is on (shared with every accessor). */
  readonly #dirtyOn: Int32Array<SharedArrayBuffer>;
  readonly #dirtyLog: HostDirtyLog;

  static {
    construct = (table, reader) => new GuestMemory(table, reader);
  }

  private constructor(table: GuestMemoryTable, reader: SharedTableReader | undefined) {
    if (table.size > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new RangeError(`guest address reservation of ${table.size} bytes is too large`);
    }
    this.#table = table;
    this.#size = table.size;
    this.#sizeNumber = Number(table.size);
    this.#base = table.base;
    this.#reader = reader;
    this.#dirtyOn = table.dirtyLog.flag;
    this.#dirtyLog = table.dirtyLog;
  }

  /** Marks the pages of a write that has landed (tracking is on; `length` > 0). */
  #markDirty(gpa: bigint | number, length: number): void {
    markPages(this.#dirtyLog, Number(gpa), length);
  }

  /** Bytes of guest physical address space covered (the reservation size). */
  get size(): bigint {
    return this.#size;
  }

  /**
   * Offset into `#fastWindow` of `[gpa, gpa + length)` when the range lies
   * in one entry and one window, or -1 when it does not (every byte has
   * been checked; copy through {@linkcode #windowAt} then). Throws a
   * GuestMemoryError when the access is refused.
   */
  #locate(gpa: bigint | number, length: number, write: boolean): number {
    const addr = fastAddress(gpa);
    if (
      this.#generation === this.#table.generation && addr >= this.#fastStart &&
      addr + length <= this.#fastEnd && (!write || this.#fastWritable)
    ) {
      return addr - this.#fastWindow!.start;
    }
    return this.#locateSlow(gpa, BigInt(length), write);
  }

  #locateSlow(gpa: unknown, length: bigint, write: boolean): number {
    const addr = toAddress(gpa, length, write);
    return this.#check(addr, length, write);
  }

  /** The full check of `[addr, addr + length)`; see `#locate`. */
  #check(addr: bigint, length: bigint, write: boolean): number {
    const end = addr + length;
    if (end > TWO_POW_64) throw GuestMemoryError.overflow({ address: addr, length, write });
    if (end > this.#size) {
      const gpa = addr > this.#size ? addr : this.#size;
      throw GuestMemoryError.outOfRange(gpa, this.#size, { address: addr, length, write });
    }
    const table = this.#table;
    if (table.isDisposed || this.#closed) {
      throw GuestMemoryError.disposed({ address: addr, length, write });
    }
    if (length === 0n) return -1;
    // One consistent table for the whole check (a Worker's may move on
    // meanwhile, which only makes the next access check again).
    const generation = table.refresh();
    const start = Number(addr);
    const stop = Number(end);
    const first = table.find(start);
    if (first === undefined) {
      throw GuestMemoryError.unmapped(addr, { address: addr, length, write });
    }
    let entry = first;
    for (;;) {
      if (write && !entry.writable) {
        const at = addr > entry.range.start ? addr : entry.range.start;
        throw GuestMemoryError.readOnly(at, { address: addr, length, write });
      }
      if (entry.endNumber >= stop) break;
      const next = table.find(entry.endNumber);
      if (next === undefined || next.startNumber !== entry.endNumber) {
        throw GuestMemoryError.unmapped(entry.range.end, { address: addr, length, write });
      }
      entry = next;
    }
    const window = this.#windowAt(start);
    if (entry !== first || stop > window.end) return -1;
    this.#fastStart = entry.startNumber > window.start ? entry.startNumber : window.start;
    this.#fastEnd = entry.endNumber < window.end ? entry.endNumber : window.end;
    this.#fastWritable = entry.writable;
    this.#fastWindow = window;
    this.#generation = generation;
    return start - window.start;
  }

  /** 32-bit words over the window of the last access (for `Atomics`). */
  #words32(): Uint32Array<ArrayBuffer> {
    const window = this.#fastWindow!;
    window.words32 ??= new Uint32Array(window.bytes.buffer);
    return window.words32;
  }

  /** 64-bit words over the window of the last access (for `Atomics`). */
  #words64(): BigUint64Array<ArrayBuffer> {
    const window = this.#fastWindow!;
    window.words64 ??= new BigUint64Array(window.bytes.buffer);
    return window.words64;
  }

  /** The window holding guest address `addr` (made on first use). */
  #windowAt(addr: number): Window {
    const index = Math.floor(addr / WINDOW_SIZE);
    let window = this.#windows.get(index);
    if (window === undefined) {
      const start = index * WINDOW_SIZE;
      const end = Math.min(start + WINDOW_SIZE, this.#sizeNumber);
      const bytes = hostBytes(this.#base + BigInt(start), BigInt(end - start));
      window = {
        start,
        end,
        bytes,
        view: new DataView(bytes.buffer),
        words32: undefined,
        words64: undefined,
      };
      if (this.#windows.size >= MAX_WINDOWS) this.#windows.clear();
      this.#windows.set(index, window);
    }
    return window;
  }

  /**
   * Where the piece of a (checked) spanning access that starts at `at` ends:
   * at the end of its table entry or of its window, whichever comes first.
   * Copying entry by entry, in address order, keeps the result that of
   * byte-by-byte copying where two entries map the same file pages.
   */
  #pieceEnd(at: number, window: Window): number {
    // In a Worker the shared table may have moved on since the check (the
    // memory stays mapped until this access ends): then up to the window's end.
    const entryEnd = this.#table.find(at)?.endNumber ?? window.end;
    return entryEnd < window.end ? entryEnd : window.end;
  }

  /** Copies the (checked) guest range `[addr, addr + length)` into `dest` piece by piece. */
  #gather(addr: number, dest: Uint8Array, length: number): void {
    for (let done = 0; done < length;) {
      const window = this.#windowAt(addr + done);
      const offset = addr + done - window.start;
      const n = Math.min(length - done, this.#pieceEnd(addr + done, window) - (addr + done));
      dest.set(window.bytes.subarray(offset, offset + n), done);
      done += n;
    }
  }

  /** Copies `src` to the (checked) guest range `[addr, addr + length)` piece by piece. */
  #scatter(addr: number, src: Uint8Array, length: number): void {
    for (let done = 0; done < length;) {
      const window = this.#windowAt(addr + done);
      const offset = addr + done - window.start;
      const n = Math.min(length - done, this.#pieceEnd(addr + done, window) - (addr + done));
      window.bytes.set(src.subarray(done, done + n), offset);
      done += n;
    }
  }

  /** Reads a value of `length` bytes that spans entries or windows into the scratch buffer. */
  #gatherScratch(gpa: bigint | number, length: number): DataView {
    this.#gather(Number(gpa), this.#scratch, length);
    return this.#scratchView;
  }

  /** Writes the first `length` scratch bytes to a value that spans entries or windows. */
  #scatterScratch(gpa: bigint | number, length: number): void {
    this.#scatter(Number(gpa), this.#scratch, length);
  }

  /**
   * Fills `dest` with the guest bytes at `[gpa, gpa + dest.length)`.
   * Throws a {@linkcode GuestMemoryError} (leaving `dest` untouched) if any
   * byte is inaccessible.
   */
  read(gpa: bigint | number, dest: Uint8Array): void {
    const reader = this.#reader;
    reader?.enter();
    try {
      const length = dest.length;
      const offset = this.#locate(gpa, length, false);
      if (offset >= 0) {
        const bytes = this.#fastWindow!.bytes;
        if (length <= SMALL_COPY) {
          for (let i = 0; i < length; i++) dest[i] = bytes[offset + i];
        } else {
          dest.set(bytes.subarray(offset, offset + length));
        }
      } else if (length > 0) {
        this.#gather(Number(gpa), dest, length);
      }
    } finally {
      reader?.exit();
    }
  }

  /**
   * Writes `src` to the guest bytes at `[gpa, gpa + src.length)`. Throws a
   * {@linkcode GuestMemoryError} (writing nothing) if any byte is
   * inaccessible or read-only.
   */
  write(gpa: bigint | number, src: Uint8Array): void {
    const reader = this.#reader;
    reader?.enter();
    try {
      const length = src.length;
      const offset = this.#locate(gpa, length, true);
      if (offset >= 0) {
        const bytes = this.#fastWindow!.bytes;
        if (length <= SMALL_COPY) {
          for (let i = 0; i < length; i++) bytes[offset + i] = src[i];
        } else {
          bytes.set(src, offset);
        }
      } else if (length > 0) {
        this.#scatter(Number(gpa), src, length);
      }
      if (this.#dirtyOn[0] !== 0 && length > 0) this.#markDirty(gpa, length);
    } finally {
      reader?.exit();
    }
  }

  /** Reads `length` guest bytes at `gpa` into a new array. */
  readBytes(gpa: bigint | number, length: bigint | number): Uint8Array<ArrayBuffer> {
    const reader = this.#reader;
    reader?.enter();
    try {
      const len = toLength(length);
      const addr = toAddress(gpa, len, false);
      this.#check(addr, len, false);
      const dest = new Uint8Array(Number(len));
      this.read(addr, dest);
      return dest;
    } finally {
      reader?.exit();
    }
  }

  /** Sets `length` guest bytes at `gpa` to `value` (0..255). */
  fill(gpa: bigint | number, length: bigint | number, value: number): void {
    const reader = this.#reader;
    reader?.enter();
    try {
      checkU8(value);
      const len = toLength(length);
      const addr = toAddress(gpa, len, true);
      const offset = this.#check(addr, len, true);
      if (offset >= 0) {
        this.#fastWindow!.bytes.fill(value, offset, offset + Number(len));
      } else {
        const start = Number(addr);
        const end = start + Number(len);
        for (let at = start; at < end;) {
          const window = this.#windowAt(at);
          const to = Math.min(end, this.#pieceEnd(at, window));
          window.bytes.fill(value, at - window.start, to - window.start);
          at = to;
        }
      }
      if (this.#dirtyOn[0] !== 0 && len > 0n) this.#markDirty(addr, Number(len));
    } finally {
      reader?.exit();
    }
  }

  /** Reads the byte at `gpa`. */
  readU8(gpa: bigint | number): number {
    const reader = this.#reader;
    reader?.enter();
    try {
      const offset = this.#locate(gpa, 1, false);
      return this.#fastWindow!.bytes[offset];
    } finally {
      reader?.exit();
    }
  }

  /** Reads the little-endian u16 at `gpa`. */
  readU16(gpa: bigint | number): number {
    const reader = this.#reader;
    reader?.enter();
    try {
      const offset = this.#locate(gpa, 2, false);
      if (offset >= 0) return this.#fastWindow!.view.getUint16(offset, true);
      return this.#gatherScratch(gpa, 2).getUint16(0, true);
    } finally {
      reader?.exit();
    }
  }

  /** Reads the little-endian u32 at `gpa`. */
  readU32(gpa: bigint | number): number {
    const reader = this.#reader;
    reader?.enter();
    try {
      const offset = this.#locate(gpa, 4, false);
      if (offset >= 0) return this.#fastWindow!.view.getUint32(offset, true);
      return this.#gatherScratch(gpa, 4).getUint32(0, true);
    } finally {
      reader?.exit();
    }
  }

  /** Reads the little-endian u64 at `gpa`. */
  readU64(gpa: bigint | number): bigint {
    const reader = this.#reader;
    reader?.enter();
    try {
      const offset = this.#locate(gpa, 8, false);
      if (offset >= 0) return this.#fastWindow!.view.getBigUint64(offset, true);
      return this.#gatherScratch(gpa, 8).getBigUint64(0, true);
    } finally {
      reader?.exit();
    }
  }

  /** Writes the byte `value` (0..255) at `gpa`. */
  writeU8(gpa: bigint | number, value: number): void {
    const reader = this.#reader;
    reader?.enter();
    try {
      checkU8(value);
      const offset = this.#locate(gpa, 1, true);
      this.#fastWindow!.bytes[offset] = value;
      if (this.#dirtyOn[0] !== 0) this.#markDirty(gpa, 1);
    } finally {
      reader?.exit();
    }
  }

  /** Writes `value` (0..65535) as a little-endian u16 at `gpa`. */
  writeU16(gpa: bigint | number, value: number): void {
    const reader = this.#reader;
    reader?.enter();
    try {
      checkU16(value);
      const offset = this.#locate(gpa, 2, true);
      if (offset >= 0) {
        this.#fastWindow!.view.setUint16(offset, value, true);
      } else {
        this.#scratchView.setUint16(0, value, true);
        this.#scatterScratch(gpa, 2);
      }
      if (this.#dirtyOn[0] !== 0) this.#markDirty(gpa, 2);
    } finally {
      reader?.exit();
    }
  }

  /** Writes `value` (0..2^32-1) as a little-endian u32 at `gpa`. */
  writeU32(gpa: bigint | number, value: number): void {
    const reader = this.#reader;
    reader?.enter();
    try {
      checkU32(value);
      const offset = this.#locate(gpa, 4, true);
      if (offset >= 0) {
        this.#fastWindow!.view.setUint32(offset, value, true);
      } else {
        this.#scratchView.setUint32(0, value, true);
        this.#scatterScratch(gpa, 4);
      }
      if (this.#dirtyOn[0] !== 0) this.#markDirty(gpa, 4);
    } finally {
      reader?.exit();
    }
  }

  /** Writes `value` (0n..2^64-1) as a little-endian u64 at `gpa`. */
  writeU64(gpa: bigint | number, value: bigint): void {
    const reader = this.#reader;
    reader?.enter();
    try {
      checkU64(value);
      const offset = this.#locate(gpa, 8, true);
      if (offset >= 0) {
        this.#fastWindow!.view.setBigUint64(offset, value, true);
      } else {
        this.#scratchView.setBigUint64(0, value, true);
        this.#scatterScratch(gpa, 8);
      }
      if (this.#dirtyOn[0] !== 0) this.#markDirty(gpa, 8);
    } finally {
      reader?.exit();
    }
  }

  /**
   * Offset into `#fastWindow` for an atomic access of `size` bytes (aligned,
   * so never spanning a page, an entry or a window).
   */
  #locateAtomic(gpa: bigint | number, size: number): number {
    const addr = fastAddress(gpa);
    if (addr >= 0 && addr % size === 0) return this.#locate(addr, size, true);
    const length = BigInt(size);
    const big = toAddress(gpa, length, true);
    if (big % length !== 0n) {
      throw GuestMemoryError.misaligned(size, { address: big, length, write: true });
    }
    return this.#check(big, length, true);
  }

  /**
   * Atomically replaces the little-endian u32 at `gpa` (4-byte aligned) with
   * `replacement` if it equals `expected`. Returns the value that was there:
   * the exchange happened exactly when it equals `expected`.
   */
  compareExchange32(gpa: bigint | number, expected: number, replacement: number): number {
    const reader = this.#reader;
    reader?.enter();
    try {
      checkU32(expected);
      checkU32(replacement);
      const offset = this.#locateAtomic(gpa, 4);
      const old = Atomics.compareExchange(
        this.#words32(),
        offset / 4,
        expected,
        replacement,
      );
      if (this.#dirtyOn[0] !== 0 && old === expected) this.#markDirty(gpa, 4);
      return old;
    } finally {
      reader?.exit();
    }
  }

  /**
   * Atomically replaces the little-endian u64 at `gpa` (8-byte aligned) with
   * `replacement` if it equals `expected`. Returns the value that was there:
   * the exchange happened exactly when it equals `expected`.
   */
  compareExchange64(gpa: bigint | number, expected: bigint, replacement: bigint): bigint {
    const reader = this.#reader;
    reader?.enter();
    try {
      checkU64(expected);
      checkU64(replacement);
      const offset = this.#locateAtomic(gpa, 8);
      const old = Atomics.compareExchange(
        this.#words64(),
        offset / 8,
        expected,
        replacement,
      );
      if (this.#dirtyOn[0] !== 0 && old === expected) this.#markDirty(gpa, 8);
      return old;
    } finally {
      reader?.exit();
    }
  }

  /**
   * The error an access of `length` bytes at `gpa` would raise, or
   * `undefined` if it would succeed. Touches no memory. Wrongly typed
   * arguments still throw a `TypeError`.
   */
  probe(
    gpa: bigint | number,
    length: bigint | number,
    write = false,
  ): GuestMemoryError | undefined {
    const reader = this.#reader;
    reader?.enter();
    try {
      const len = toLength(length);
      try {
        this.#check(toAddress(gpa, len, write), len, write);
        return undefined;
      } catch (err) {
        if (err instanceof GuestMemoryError) return err;
        throw err;
      }
    } finally {
      reader?.exit();
    }
  }

  /** Whether an access of `length` bytes at `gpa` (a write if `write`) would succeed. */
  isMapped(gpa: bigint | number, length: bigint | number, write = false): boolean {
    const reader = this.#reader;
    reader?.enter();
    try {
      return this.probe(gpa, length, write) === undefined;
    } finally {
      reader?.exit();
    }
  }

  /**
   * Gives up this accessor. In a Worker it frees its reader slot in the
   * manager's shared table; later accesses fail with `disposed`. On the
   * main thread (the manager's own accessor) it only does the latter.
   */
  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#fastWindow = undefined;
    this.#fastStart = this.#fastEnd = 0;
    this.#generation = -1;
    this.#reader?.release();
  }
}
