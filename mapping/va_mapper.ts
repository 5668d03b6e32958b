import { Madv, Mman } from "../ffi/constants.ts";
import { hostBytes } from "../ffi/host_memory.ts";
import { HostMapping } from "../ffi/host_mapping.ts";
import { madvise, mmap, protFor } from "../ffi/mman.ts";
import { setAnonVmaName } from "../ffi/system.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import type { Mappable } from "./mappable.ts";
import { ChunkedSortedList, type ListCursor } from "../collections/chunked_sorted_list.ts";

/**
 * What backs one live range of the reservation: `"shared"` (a file mapping)
 * or `"private"` (anonymous private RAM).
 *
 * @example
 * ```ts
 * import type { VaBackingKind } from "./va_mapper.ts";
 * const kind: VaBackingKind = "shared";
 * console.log(kind);
 * ```
 */
export type VaBackingKind = "shared" | "private";

/**
 * One accessible range of the reservation, in guest physical addresses.
 * Everything in the reservation that no entry covers is `PROT_NONE`.
 *
 * @example
 * ```ts ignore
 * import { VaMapper } from "./va_mapper.ts";
 * using va = VaMapper.reserve(0x100000n);
 * for (const entry of va.entries()) {
 *   console.log(`${entry.range}`, entry.kind, entry.writable);
 * }
 * ```
 */
export class VaEntry {
  /** The guest physical range (host address = base + gpa). */
  readonly range: MemoryRange;
  /** Whether the host may write through it. */
  readonly writable: boolean;
  /** `shared`: a file mapping; `private`: anonymous private RAM. */
  readonly kind: VaBackingKind;
  /** The backing fd (`-1` for private memory). */
  readonly fd: number;
  /** Offset of `range.start` in the backing file. */
  readonly fileOffset: bigint;
  /** Host address of `range.start`. */
  readonly hostAddress: bigint;
  /** `range.start` as a number, for fast offset arithmetic (guest addresses < 2^53). */
  readonly startNumber: number;
  /** `range.end` as a number. */
  readonly endNumber: number;
  #bytes: Uint8Array<ArrayBuffer> | undefined;
  #view: DataView<ArrayBuffer> | undefined;
  #words32: Uint32Array<ArrayBuffer> | undefined;
  #words64: BigUint64Array<ArrayBuffer> | undefined;

  /** Describes a live range; made only by {@linkcode VaMapper}. */
  constructor(
    range: MemoryRange,
    writable: boolean,
    kind: VaBackingKind,
    fd: number,
    fileOffset: bigint,
    hostAddress: bigint,
  ) {
    this.range = range;
    this.writable = writable;
    this.kind = kind;
    this.fd = fd;
    this.fileOffset = fileOffset;
    this.hostAddress = hostAddress;
    this.startNumber = Number(range.start);
    this.endNumber = Number(range.end);
  }

  /** A byte view over the whole entry, made once and reused. */
  get bytes(): Uint8Array<ArrayBuffer> {
    this.#bytes ??= hostBytes(this.hostAddress, this.range.len);
    return this.#bytes;
  }

  /** A DataView over the whole entry, made once and reused. */
  get view(): DataView<ArrayBuffer> {
    this.#view ??= new DataView(this.bytes.buffer);
    return this.#view;
  }

  /** 32-bit words over the whole entry (for `Atomics`), made once and reused. */
  get words32(): Uint32Array<ArrayBuffer> {
    this.#words32 ??= new Uint32Array(this.bytes.buffer);
    return this.#words32;
  }

  /** 64-bit words over the whole entry (for `Atomics`), made once and reused. */
  get words64(): BigUint64Array<ArrayBuffer> {
    this.#words64 ??= new BigUint64Array(this.bytes.buffer);
    return this.#words64;
  }

  /** The part of this entry inside `range` (which must overlap it). */
  slice(range: MemoryRange): VaEntry {
    const part = this.range.intersection(range);
    const delta = part.start - this.range.start;
    return new VaEntry(
      part,
      this.writable,
      this.kind,
      this.fd,
      this.fileOffset + delta,
      this.hostAddress + delta,
    );
  }
}

/**
 * The host virtual address reservation that holds guest memory: one
 * contiguous `PROT_NONE` range covering guest physical `[0, size)`, so the
 * host address of `gpa` is `base + gpa`. Backing objects are mapped into it
 * with `MAP_FIXED` and taken out again by mapping `PROT_NONE` back.
 *
 * It keeps an ordered table of the live ranges ({@linkcode VaEntry}) that
 * guest memory accessors check before touching memory, and a generation
 * counter that changes whenever the table does.
 *
 * @example
 * ```ts ignore
 * import { VaMapper } from "./va_mapper.ts";
 * using va = VaMapper.reserve(1n << 30n);
 * console.log(va.hostAddress(0x1000n) - va.base); // 4096n
 * ```
 */
export class VaMapper implements Disposable {
  #reservation: HostMapping;
  #entries: ChunkedSortedList<VaEntry> = new ChunkedSortedList();
  #generation = 0;

  private constructor(reservation: HostMapping) {
    this.#reservation = reservation;
  }

  /**
   * Reserves `size` bytes of inaccessible address space (no swap
   * reservation), starting at a multiple of `alignment` when given (the
   * hugepage size, for hugetlb-backed guest RAM).
   */
  static reserve(size: bigint, alignment?: bigint): VaMapper {
    return new VaMapper(HostMapping.reserve(size, alignment));
  }

  /** Host address of guest physical address 0. */
  get base(): bigint {
    return this.#reservation.address;
  }

  /** Bytes of guest physical address space covered. */
  get size(): bigint {
    return this.#reservation.length;
  }

  /** Whether the reservation is still held. */
  get isReserved(): boolean {
    return this.#reservation.isMapped;
  }

  /** Changes whenever the table of live ranges changes. */
  get generation(): number {
    return this.#generation;
  }

  /** Host address of `gpa`. */
  hostAddress(gpa: bigint): bigint {
    return this.base + gpa;
  }

  /** The live ranges, ordered by address, non-overlapping. */
  entries(): readonly VaEntry[] {
    return this.#entries.toArray();
  }

  /** Index of the entry containing `gpa`, or -1 (binary search). */
  findIndex(gpa: bigint): number {
    const entries = this.#entries.toArray();
    let lo = 0;
    let hi = entries.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const range = entries[mid].range;
      if (gpa < range.start) hi = mid - 1;
      else if (gpa >= range.end) lo = mid + 1;
      else return mid;
    }
    return -1;
  }

  /**
   * Maps `length` bytes of `backing` from `fileOffset` at `range` (shared,
   * `MAP_FIXED`), replacing whatever was there.
   */
  mapShared(range: MemoryRange, backing: Mappable, fileOffset: bigint, writable: boolean): void {
    this.#checkInside(range);
    if (range.isEmpty()) return;
    const host = this.base + range.start;
    mmap(
      host,
      range.len,
      protFor(writable),
      Mman.MAP_SHARED | Mman.MAP_FIXED,
      backing.fd,
      fileOffset,
    );
    this.#replace(range, new VaEntry(range, writable, "shared", backing.fd, fileOffset, host));
  }

  /**
   * Backs `range` with private anonymous memory (`MAP_FIXED`), named `name`
   * in /proc/self/maps where the kernel supports VMA names. Private ranges
   * survive {@linkcode unmap}: they are guest RAM, not a mapping of it.
   */
  allocPrivate(range: MemoryRange, name?: string): void {
    this.#checkInside(range);
    if (range.isEmpty()) return;
    const host = this.base + range.start;
    const flags = Mman.MAP_PRIVATE | Mman.MAP_ANONYMOUS | Mman.MAP_FIXED | Mman.MAP_NORESERVE;
    mmap(host, range.len, protFor(true), flags, -1, 0n);
    this.#replace(range, new VaEntry(range, true, "private", -1, 0n, host));
    if (name !== undefined) {
      try {
        setAnonVmaName(host, range.len, name);
      } catch {
        // Kernels without CONFIG_ANON_VMA_NAME refuse; the name is cosmetic.
      }
    }
  }

  /** `madvise(MADV_HUGEPAGE)` over `range` (throws a SyscallError on failure). */
  adviseHugepages(range: MemoryRange): void {
    this.#checkInside(range);
    madvise(this.base + range.start, range.len, Madv.MADV_HUGEPAGE);
  }

  /**
   * Makes the shared mappings inside `range` inaccessible again (`PROT_NONE`
   * reservation). Private RAM in the range is kept.
   */
  unmap(range: MemoryRange): void {
    this.#checkInside(range);
    if (range.isEmpty()) return;
    const list = this.#entries;
    let hasShared = false;
    for (
      let c = this.#firstOverlapping(range), e = list.at(c);
      e !== undefined && e.range.start < range.end;
      c = list.next(c), e = list.at(c)
    ) {
      if (e.kind === "shared") {
        hasShared = true;
        break;
      }
    }
    if (!hasShared) return;
    const kept: VaEntry[] = [];
    for (const entry of this.#takeOverlapping(range)) {
      if (entry.kind === "private") {
        kept.push(entry);
        continue;
      }
      const cut = entry.range.intersection(range);
      const flags = Mman.MAP_PRIVATE | Mman.MAP_ANONYMOUS | Mman.MAP_FIXED | Mman.MAP_NORESERVE;
      mmap(this.base + cut.start, cut.len, Mman.PROT_NONE, flags, -1, 0n);
      if (entry.range.start < cut.start) {
        kept.push(entry.slice(new MemoryRange(entry.range.start, cut.start)));
      }
      if (cut.end < entry.range.end) {
        kept.push(entry.slice(new MemoryRange(cut.end, entry.range.end)));
      }
    }
    this.#insertAll(kept);
    this.#generation++;
  }

  /** Releases the whole reservation (every mapping in it goes too). */
  [Symbol.dispose](): void {
    if (!this.#reservation.isMapped) return;
    this.#entries = new ChunkedSortedList();
    this.#generation++;
    this.#reservation.unmap();
  }

  #checkInside(range: MemoryRange): void {
    if (range.end > this.size) {
      throw new RangeError(`${range} is outside the ${this.size}-byte guest address reservation`);
    }
  }

  /** Cursor of the first entry whose end is above `range.start`. */
  #firstOverlapping(range: MemoryRange): ListCursor {
    const start = range.start;
    return this.#entries.firstWhere((e) => e.range.end > start);
  }

  /** Removes the entries overlapping `range` from the table and returns them in order. */
  #takeOverlapping(range: MemoryRange): VaEntry[] {
    const list = this.#entries;
    const taken: VaEntry[] = [];
    for (;;) {
      const cursor = this.#firstOverlapping(range);
      const entry = list.at(cursor);
      if (entry === undefined || entry.range.start >= range.end) return taken;
      list.removeAt(cursor);
      taken.push(entry);
    }
  }

  /** Inserts disjoint `pieces` (not overlapping any entry) in address order. */
  #insertAll(pieces: readonly VaEntry[]): void {
    const list = this.#entries;
    for (const piece of pieces) {
      const start = piece.range.start;
      list.insertAt(list.firstWhere((e) => e.range.start >= start), piece);
    }
  }

  /** Puts `entry` in the table, trimming whatever it overlaps. */
  #replace(range: MemoryRange, entry: VaEntry): void {
    const taken = this.#takeOverlapping(range);
    const pieces: VaEntry[] = [entry];
    if (taken.length > 0) {
      // Entries are ordered and disjoint: only the first overlapped one can
      // stick out on the left, only the last one on the right.
      const head = taken[0];
      if (head.range.start < range.start) {
        pieces.unshift(head.slice(new MemoryRange(head.range.start, range.start)));
      }
      const tail = taken[taken.length - 1];
      if (range.end < tail.range.end) {
        pieces.push(tail.slice(new MemoryRange(range.end, tail.range.end)));
      }
    }
    this.#insertAll(pieces);
    this.#generation++;
  }
}
