import { lowerBound } from "../collections/_lower_bound.ts";
import type { SharedTableReader } from "../mapping/_shared_table.ts";
import type { VaEntry, VaMapper } from "../mapping/_va_mapper.ts";
import { type GuestMemoryTable, WorkerTable } from "../mapping/_worker_table.ts";
import { GuestMemoryError } from "./guest_memory_error.ts";

const U64_MAX = (1n << 64n) - 1n;
const TWO_POW_64 = 1n << 64n;
/** Single-entry reads and writes up to this length copy byte by byte (no view is made). */
const SMALL_COPY = 64;

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

const endsAbove = (entry: VaEntry, address: number): boolean => entry.endNumber > address;

/** Index of the entry of `entries` containing `address`, or -1. */
function indexOf(entries: readonly VaEntry[], address: number): number {
  const index = lowerBound(entries, endsAbove, address);
  return index < entries.length && entries[index].startNumber <= address ? index : -1;
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
): GuestMemory {
  const table = new WorkerTable(buffer, base, size, name);
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
 * ```ts ignore
 * import { GuestMemoryBuilder, GuestMemoryError, MemoryLayout } from "../mod.ts";
 * using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(1n << 30n, []));
 * const memory = manager.client().guestMemory();
 * memory.writeU32(0x1000n, 0xdeadbeef);
 * console.log(memory.readU32(0x1000n).toString(16)); // deadbeef
 * try {
 *   memory.readU8(0x40000000n);
 * } catch (err) {
 *   if (!(err instanceof GuestMemoryError)) throw err;
 *   console.log(err.kind, err.message); // outOfRange guest address 0x40000000 is outside guest memory 0x0-0x40000000
 * }
 * ```
 */
export class GuestMemory {
  #va: GuestMemoryTable;
  /** In a Worker: this accessor's reader slot in the manager's shared table. */
  #reader: SharedTableReader | undefined;
  #size: bigint;
  /** The entry the last access hit, valid while `#generation` matches the mapper. */
  #entry: VaEntry | undefined;
  #generation = -1;
  /** Set by `#check` when an access spans entries: the first entry's index, and the table it indexes. */
  #spanIndex = -1;
  #spanEntries: readonly VaEntry[] = [];
  #closed = false;
  #scratch = new Uint8Array(8);
  #scratchView = new DataView(this.#scratch.buffer);

  static {
    construct = (va, reader) => new GuestMemory(va, reader);
  }

  private constructor(va: GuestMemoryTable, reader: SharedTableReader | undefined) {
    if (va.size > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new RangeError(`guest address reservation of ${va.size} bytes is too large`);
    }
    this.#va = va;
    this.#size = va.size;
    this.#reader = reader;
  }

  /** Bytes of guest physical address space covered (the reservation size). */
  get size(): bigint {
    return this.#size;
  }

  /**
   * Offset into `#entry` of `[gpa, gpa + length)` when the range lies in one
   * entry, or -1 when it spans several (then `#spanIndex` is the first
   * entry's index). Throws a GuestMemoryError when the access is refused.
   */
  #locate(gpa: bigint | number, length: number, write: boolean): number {
    const addr = fastAddress(gpa);
    const entry = this.#entry;
    if (
      entry !== undefined && this.#generation === this.#va.generation &&
      addr >= entry.startNumber && addr + length <= entry.endNumber && (!write || entry.writable)
    ) {
      return addr - entry.startNumber;
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
    this.#spanIndex = -1;
    const va = this.#va;
    if (va.isDisposed || this.#closed) {
      throw GuestMemoryError.disposed({ address: addr, length, write });
    }
    if (length === 0n) return -1;
    // The generation first: the entries are then at least that new (a
    // Worker's table may move on meanwhile, which only makes the cache miss).
    const generation = va.generation;
    const entries = va.entries();
    const first = indexOf(entries, Number(addr));
    if (first < 0) throw GuestMemoryError.unmapped(addr, { address: addr, length, write });
    const endNumber = Number(end);
    let i = first;
    for (;;) {
      const entry = entries[i];
      if (write && !entry.writable) {
        const at = addr > entry.range.start ? addr : entry.range.start;
        throw GuestMemoryError.readOnly(at, { address: addr, length, write });
      }
      if (entry.endNumber >= endNumber) break;
      const next = entries[i + 1];
      if (next === undefined || next.startNumber !== entry.endNumber) {
        throw GuestMemoryError.unmapped(entry.range.end, { address: addr, length, write });
      }
      i++;
    }
    if (i === first) {
      const entry = entries[first];
      this.#entry = entry;
      this.#generation = generation;
      return Number(addr) - entry.startNumber;
    }
    this.#spanIndex = first;
    this.#spanEntries = entries;
    return -1;
  }

  /** Copies `[addr, addr + length)` (already checked, starting in entry `index`) into `dest`. */
  #gather(addr: number, dest: Uint8Array, length: number, index: number): void {
    const entries = this.#spanEntries;
    let done = 0;
    for (let i = index; done < length; i++) {
      const entry = entries[i];
      const at = addr + done;
      const offset = at - entry.startNumber;
      const n = Math.min(length - done, entry.endNumber - at);
      dest.set(entry.bytes.subarray(offset, offset + n), done);
      done += n;
    }
  }

  /** Copies `src` to `[addr, addr + src.length)` (already checked, starting in entry `index`). */
  #scatter(addr: number, src: Uint8Array, length: number, index: number): void {
    const entries = this.#spanEntries;
    let done = 0;
    for (let i = index; done < length; i++) {
      const entry = entries[i];
      const at = addr + done;
      const offset = at - entry.startNumber;
      const n = Math.min(length - done, entry.endNumber - at);
      entry.bytes.set(src.subarray(done, done + n), offset);
      done += n;
    }
  }

  /** Reads a value of `length` bytes that spans entries into the scratch buffer. */
  #gatherScratch(gpa: bigint | number, length: number): DataView {
    this.#gather(Number(gpa), this.#scratch, length, this.#spanIndex);
    return this.#scratchView;
  }

  /** Writes the first `length` scratch bytes to a value that spans entries. */
  #scatterScratch(gpa: bigint | number, length: number): void {
    this.#scatter(Number(gpa), this.#scratch, length, this.#spanIndex);
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
        const bytes = this.#entry!.bytes;
        if (length <= SMALL_COPY) {
          for (let i = 0; i < length; i++) dest[i] = bytes[offset + i];
        } else {
          dest.set(bytes.subarray(offset, offset + length));
        }
      } else if (length > 0) {
        this.#gather(Number(gpa), dest, length, this.#spanIndex);
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
        const bytes = this.#entry!.bytes;
        if (length <= SMALL_COPY) {
          for (let i = 0; i < length; i++) bytes[offset + i] = src[i];
        } else {
          bytes.set(src, offset);
        }
      } else if (length > 0) {
        this.#scatter(Number(gpa), src, length, this.#spanIndex);
      }
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
        this.#entry!.bytes.fill(value, offset, offset + Number(len));
        return;
      }
      const entries = this.#spanEntries;
      const start = Number(addr);
      const end = start + Number(len);
      for (let i = this.#spanIndex; i >= 0 && i < entries.length; i++) {
        const entry = entries[i];
        if (entry.startNumber >= end) break;
        const from = Math.max(start, entry.startNumber) - entry.startNumber;
        const to = Math.min(end, entry.endNumber) - entry.startNumber;
        entry.bytes.fill(value, from, to);
      }
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
      return this.#entry!.bytes[offset];
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
      if (offset >= 0) return this.#entry!.view.getUint16(offset, true);
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
      if (offset >= 0) return this.#entry!.view.getUint32(offset, true);
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
      if (offset >= 0) return this.#entry!.view.getBigUint64(offset, true);
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
      this.#entry!.bytes[offset] = value;
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
        this.#entry!.view.setUint16(offset, value, true);
      } else {
        this.#scratchView.setUint16(0, value, true);
        this.#scatterScratch(gpa, 2);
      }
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
        this.#entry!.view.setUint32(offset, value, true);
      } else {
        this.#scratchView.setUint32(0, value, true);
        this.#scatterScratch(gpa, 4);
      }
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
        this.#entry!.view.setBigUint64(offset, value, true);
      } else {
        this.#scratchView.setBigUint64(0, value, true);
        this.#scatterScratch(gpa, 8);
      }
    } finally {
      reader?.exit();
    }
  }

  /** Offset into `#entry` for an atomic access of `size` bytes (aligned, so never spanning). */
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
      return Atomics.compareExchange(this.#entry!.words32, offset / 4, expected, replacement);
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
      return Atomics.compareExchange(this.#entry!.words64, offset / 8, expected, replacement);
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
    this.#entry = undefined;
    this.#generation = -1;
    this.#reader?.release();
  }
}
