import { Madv, Mman } from "../ffi/_constants.ts";
import { hostBytes } from "../ffi/_host_memory.ts";
import { HostMapping } from "../ffi/_host_mapping.ts";
import { madvise, madviseParallel, mmap, protFor } from "../ffi/_mman.ts";
import { tryAnonVmaName } from "../ffi/_system.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import type { Mappable } from "./mappable.ts";
import { ChunkedSortedList } from "../collections/_chunked_sorted_list.ts";
import { warn } from "../diagnostics/warnings.ts";
import { type GraceStats, SharedTableWriter } from "./_shared_table.ts";
import { lowerBound } from "../collections/_lower_bound.ts";
import { HostDirtyLog } from "./_host_dirty_log.ts";
import { type RangeKeys, SortedRangeList } from "../collections/_sorted_range_list.ts";

/**
 * What backs one live range of the reservation: `"shared"` (a file mapping)
 * or `"private"` (anonymous private RAM).
 *
 * @example
 * ```ts
 * import type { VaBackingKind } from "./_va_mapper.ts";
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
 * import { VaMapper } from "./_va_mapper.ts";
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
  /**
   * Whether the host mapping itself is writable (`PROT_WRITE`): it can be
   * while the table refuses host writes (a read-only region over a
   * writable mapping).
   */
  readonly hostWritable: boolean;
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
    hostWritable: boolean = writable,
  ) {
    this.range = range;
    this.writable = writable;
    this.hostWritable = hostWritable;
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
      this.hostWritable,
    );
  }
}

/** Where private RAM lives, with the VMA name it was given. */
interface PrivateHome {
  readonly range: MemoryRange;
  readonly name: string | undefined;
}

const PRIVATE_HOME_KEYS: RangeKeys<PrivateHome> = {
  start: (home) => home.range.start,
  end: (home) => home.range.end,
};

/** What `#takeAway` returns when it took nothing (no allocation on the usual path). */
const NO_ENTRIES: readonly VaEntry[] = [];

/** `mmap` flags of private anonymous memory at a fixed address (the reservation itself, or private RAM). */
const ANON_FIXED_FLAGS = Mman.MAP_PRIVATE | Mman.MAP_ANONYMOUS | Mman.MAP_FIXED |
  Mman.MAP_NORESERVE;

// Search predicates over the ordered table, with the address passed as the
// search key (module-level, so a search allocates no closure). They compare
// the entries' number forms: exact, since every address in the reservation
// is below 2^47, and far cheaper than bigint comparisons, each of which is a
// runtime call in V8.
const endsAbove = (entry: VaEntry, address: number): boolean => entry.endNumber > address;
const startsAtOrAbove = (entry: VaEntry, address: number): boolean => entry.startNumber >= address;

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
 * import { VaMapper } from "./_va_mapper.ts";
 * using va = VaMapper.reserve(1n << 30n);
 * console.log(va.hostAddress(0x1000n) - va.base); // 4096n
 * ```
 */
export class VaMapper implements Disposable {
  #reservation: HostMapping;
  /**
   * Where private RAM lives ({@linkcode allocPrivate}), with its VMA name: a
   * shared mapping placed over it and later unmapped gives the range back
   * as (zeroed) private RAM rather than leaving guest RAM inaccessible.
   */
  #privateHomes: SortedRangeList<PrivateHome> = new SortedRangeList(PRIVATE_HOME_KEYS);
  #entries: ChunkedSortedList<VaEntry> = new ChunkedSortedList();
  #generation = 0;
  /** The table as Workers see it, once shared. */
  #shared: SharedTableWriter | undefined;
  /** Pages written through `GuestMemory` on any thread while tracking is on. */
  readonly dirtyLog: HostDirtyLog;

  private constructor(reservation: HostMapping) {
    this.#reservation = reservation;
    this.dirtyLog = HostDirtyLog.create(reservation.length);
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

  /** The generation of the table {@linkcode find} searches (always the current one here). */
  refresh(): number {
    return this.#generation;
  }

  /** The entry containing guest address `address` (below the reservation size), if any. */
  find(address: number): VaEntry | undefined {
    const list = this.#entries;
    const entry = list.at(list.firstWhere(endsAbove, address));
    return entry !== undefined && entry.startNumber <= address ? entry : undefined;
  }

  /** Index of the entry containing `gpa` (below the reservation size), or -1. */
  findIndex(gpa: bigint): number {
    const entries = this.#entries.toArray();
    const address = Number(gpa);
    const index = lowerBound(entries, endsAbove, address);
    return index < entries.length && entries[index].startNumber <= address ? index : -1;
  }

  /**
   * Maps `length` bytes of `backing` from `fileOffset` at `range` (shared,
   * `MAP_FIXED`), replacing whatever was there.
   *
   * When the `mmap` fails, what was there comes back: a failed `MAP_FIXED`
   * may already have unmapped the old range, so it is mapped afresh
   * (`PROT_NONE` for the reservation, the old shared mappings again,
   * private RAM as zeroed pages, as after any shared mapping over it), and
   * the table is as before. The error is rethrown.
   */
  mapShared(
    range: MemoryRange,
    backing: Mappable,
    fileOffset: bigint,
    writable: boolean,
    hostWritable: boolean = writable,
  ): void {
    this.#checkInside(range);
    if (range.isEmpty()) return;
    const old = this.#takeAway(range);
    const host = this.base + range.start;
    try {
      mmap(
        host,
        range.len,
        protFor(hostWritable),
        Mman.MAP_SHARED | Mman.MAP_FIXED,
        backing.fd,
        fileOffset,
      );
    } catch (error) {
      this.#putBack(range, old, true);
      throw error;
    }
    this.#insert(
      new VaEntry(range, writable, "shared", backing.fd, fileOffset, host, hostWritable),
    );
    this.#changed();
  }

  /**
   * Changes whether the table lets the host write the shared mappings
   * inside `range`, leaving the host mappings as they are (`writable` must
   * not exceed what they were mapped with). Taking write access away waits
   * for the readers' grace period, so no write the old table allowed lands
   * after this returns.
   */
  setWritable(range: MemoryRange, writable: boolean): void {
    this.#checkInside(range);
    if (range.isEmpty()) return;
    const list = this.#entries;
    const start = Number(range.start);
    const end = Number(range.end);
    const saved = this.#saveWithin(range);
    let changed = false;
    let downgraded = false;
    for (let from = start;;) {
      const cursor = list.firstWhere(endsAbove, from);
      const entry = list.at(cursor);
      if (entry === undefined || entry.startNumber >= end) break;
      from = entry.endNumber;
      if (entry.kind === "private" || entry.writable === writable) continue;
      list.removeAt(cursor);
      const cut = entry.range.intersection(range);
      if (entry.range.start < cut.start) {
        this.#insert(entry.slice(new MemoryRange(entry.range.start, cut.start)));
      }
      if (cut.end < entry.range.end) {
        this.#insert(entry.slice(new MemoryRange(cut.end, entry.range.end)));
      }
      const part = entry.slice(cut);
      this.#insert(
        new VaEntry(
          part.range,
          writable,
          "shared",
          part.fd,
          part.fileOffset,
          part.hostAddress,
          part.hostWritable,
        ),
      );
      changed = true;
      downgraded ||= entry.writable;
    }
    if (!changed) return;
    this.#changed();
    if (downgraded) this.#graceOrRestore(saved);
  }

  /**
   * Backs `range` with private anonymous memory (`MAP_FIXED`), named `name`
   * in /proc/self/maps where the kernel supports VMA names. Private ranges
   * survive {@linkcode unmap}: they are guest RAM, not a mapping of it.
   */
  allocPrivate(range: MemoryRange, name?: string): void {
    this.#checkInside(range);
    if (range.isEmpty()) return;
    this.#takeAway(range);
    const host = this.base + range.start;
    mmap(host, range.len, protFor(true), ANON_FIXED_FLAGS, -1, 0n);
    this.#insert(new VaEntry(range, true, "private", -1, 0n, host));
    this.#changed();
    this.#addPrivateHome(range, name);
    nameAnonymous(host, range.len, name);
  }

  /**
   * Faults in the host pages of every live range inside `range`
   * (`MADV_POPULATE_WRITE`, or `MADV_POPULATE_READ` where the host mapping
   * is read-only), `threads` ranges at once. A range that the table loses
   * meanwhile (a region change while this runs) is skipped, not an error.
   * Settles once every range is done; a range that failed then rejects
   * with `failure(part, write, cause)` (the first one, in address order).
   */
  async populate(
    range: MemoryRange,
    threads: number,
    failure: (part: MemoryRange, write: boolean, cause: unknown) => Error,
  ): Promise<void> {
    this.#checkInside(range);
    const generation = this.#generation;
    const jobs: Promise<void>[] = [];
    for (const entry of this.entries()) {
      if (!entry.range.overlaps(range)) continue;
      const part = entry.range.intersection(range);
      const write = entry.writable || entry.kind === "private";
      const advice = write ? Madv.MADV_POPULATE_WRITE : Madv.MADV_POPULATE_READ;
      jobs.push(
        madviseParallel(this.base + part.start, part.len, advice, threads).catch((cause) => {
          if (this.#generation === generation) throw failure(part, write, cause);
        }),
      );
    }
    await settleAll(jobs);
  }

  /** `madvise(MADV_HUGEPAGE)` over `range` (throws a SyscallError on failure). */
  adviseHugepages(range: MemoryRange): void {
    this.#checkInside(range);
    madvise(this.base + range.start, range.len, Madv.MADV_HUGEPAGE);
  }

  /**
   * Makes the shared mappings inside `range` inaccessible again (`PROT_NONE`
   * reservation). Private RAM in the range is kept, and where a shared
   * mapping had been placed over private RAM, that part becomes private RAM
   * again (zero-filled: the shared mapping had replaced its pages).
   */
  unmap(range: MemoryRange): void {
    this.#checkInside(range);
    if (range.isEmpty()) return;
    const list = this.#entries;
    const start = Number(range.start);
    const end = Number(range.end);
    const saved = this.#saveWithin(range);
    // First the table: readers must stop seeing the ranges before they go.
    const cuts: MemoryRange[] = [];
    const removed: VaEntry[] = [];
    // Walk the overlapped entries by address, each search starting where
    // the previous entry ended: private entries stay where they are and
    // removing a shared one does not disturb the walk.
    for (let from = start;;) {
      const cursor = list.firstWhere(endsAbove, from);
      const entry = list.at(cursor);
      if (entry === undefined || entry.startNumber >= end) break;
      from = entry.endNumber;
      if (entry.kind === "private") continue;
      // The usual case, an entry wholly inside `range`, needs no new range.
      const inside = start <= entry.startNumber && entry.endNumber <= end;
      const cut = inside ? entry.range : entry.range.intersection(range);
      list.removeAt(cursor);
      cuts.push(cut);
      removed.push(inside ? entry : entry.slice(cut));
      if (inside) continue;
      if (entry.range.start < cut.start) {
        this.#insert(entry.slice(new MemoryRange(entry.range.start, cut.start)));
      }
      if (cut.end < entry.range.end) {
        this.#insert(entry.slice(new MemoryRange(cut.end, entry.range.end)));
      }
    }
    if (cuts.length === 0) return;
    this.#changed();
    this.#graceOrRestore(saved);
    // With a reader stalled inside an access, the memory stays accessible
    // to the host (fresh anonymous pages the guest never sees) so that the
    // stalled access cannot fault.
    const prot = this.#shared?.anyStalled ? protFor(true) : Mman.PROT_NONE;
    let done = 0;
    try {
      for (; done < cuts.length; done++) {
        const cut = cuts[done];
        mmap(this.base + cut.start, cut.len, prot, ANON_FIXED_FLAGS, -1, 0n);
      }
      for (const cut of cuts) {
        if (this.#privateHomes.length > 0 && this.#restorePrivate(cut)) this.#changed();
      }
    } catch (error) {
      // Nothing is taken away after all: the ranges made inaccessible get
      // their shared mappings again, the others never lost them, and the
      // table shows them all as before.
      for (let i = 0; i < cuts.length; i++) this.#putBack(cuts[i], [removed[i]], i < done);
      throw error;
    }
  }

  /**
   * Shares the table with Workers: the buffer to hand them (made on first
   * use; from then on every change that takes memory away waits for the
   * readers' grace period).
   */
  share(): SharedArrayBuffer {
    if (this.#shared === undefined) {
      this.#shared = new SharedTableWriter();
      this.#entries.trackChanges();
      this.#publish();
      this.dirtyLog.markShared();
    }
    return this.#shared.buffer;
  }

  /**
   * Waits (bounded, as for any change) until every Worker access that was
   * under way when this was called has ended; returns at once when the
   * table was never shared or no reader exists.
   */
  synchronizeReaders(): void {
    this.#graceOver();
  }

  /**
   * Tells Workers the manager is going away: from now on their accesses
   * fail with `disposed` (the reservation itself goes with dispose).
   */
  retire(): void {
    this.#shared?.markDisposed();
  }

  /** Grace period counters (undefined before the table was first shared). */
  get graceStats(): GraceStats | undefined {
    return this.#shared?.stats;
  }

  /** Whether the reservation has been released (its table is empty for good). */
  get isDisposed(): boolean {
    return !this.#reservation.isMapped;
  }

  /** Releases the whole reservation (every mapping in it goes too). */
  [Symbol.dispose](): void {
    if (!this.#reservation.isMapped) return;
    this.#entries = new ChunkedSortedList();
    this.#generation++;
    const shared = this.#shared;
    if (shared !== undefined) {
      shared.markDisposed();
      shared.synchronize();
      if (shared.anyStalled) {
        // A reader is stuck inside an access: give the address range up as
        // harmless anonymous memory rather than unmapping it under the reader.
        warn("guest memory reservation left mapped: a reader is still inside an access");
        this.#reservation.abandonAccessible();
        return;
      }
    }
    this.#reservation.unmap();
  }

  #checkInside(range: MemoryRange): void {
    if (range.end > this.size) {
      throw new RangeError(`${range} is outside the ${this.size}-byte guest address reservation`);
    }
  }

  /**
   * Backs the parts of `cut` (just made inaccessible) that are private RAM
   * with fresh anonymous memory again. The old contents went when the
   * shared mapping replaced them; what comes back reads as zeroes.
   */
  #restorePrivate(cut: MemoryRange): boolean {
    let restored = false;
    for (const home of this.#privateHomes.overlapping(cut.start, cut.end)) {
      const part = home.range.intersection(cut);
      const host = this.base + part.start;
      mmap(host, part.len, protFor(true), ANON_FIXED_FLAGS, -1, 0n);
      nameAnonymous(host, part.len, home.name);
      this.#insert(new VaEntry(part, true, "private", -1, 0n, host));
      restored = true;
    }
    return restored;
  }

  /**
   * Adds `range` (not empty) to the private RAM homes, merged with the homes
   * it overlaps or touches, so they stay disjoint and as few as possible.
   * Only those neighbours are looked at: O(log n) per range.
   */
  #addPrivateHome(range: MemoryRange, name: string | undefined): void {
    const homes = this.#privateHomes;
    // Page-aligned ranges: one byte either side reaches the homes that touch it.
    const touched = homes.overlapping(range.start - 1n, range.end + 1n);
    let merged = range;
    if (touched.length > 0) {
      const first = touched[0].range;
      const last = touched[touched.length - 1].range;
      merged = new MemoryRange(
        first.start < range.start ? first.start : range.start,
        last.end > range.end ? last.end : range.end,
      );
      homes.removeWithin(merged.start, merged.end);
    }
    homes.insert({ range: merged, name });
  }

  /** Inserts `entry` (overlapping no entry) at its place in address order. */
  #insert(entry: VaEntry): void {
    const list = this.#entries;
    list.insertAt(list.firstWhere(startsAtOrAbove, entry.startNumber), entry);
  }

  /**
   * Undoes a failed change of `range`: whatever the table now holds inside
   * it goes, `entries` (what it held before, inside `range`) come back and,
   * when `remap`, their host memory is mapped again first (the reservation
   * `PROT_NONE` under it all). A failure now is only a warning: the range
   * is left inaccessible and out of the table, which is safe.
   */
  #putBack(range: MemoryRange, entries: readonly VaEntry[], remap: boolean): void {
    this.#takeAway(range);
    const host = this.base + range.start;
    if (remap) {
      try {
        mmap(host, range.len, Mman.PROT_NONE, ANON_FIXED_FLAGS, -1, 0n);
      } catch (cause) {
        warn(`failed to make ${range} of the guest address reservation inaccessible again`, cause);
        this.#changed();
        return;
      }
    }
    for (const entry of entries) {
      if (remap) {
        try {
          if (entry.kind === "shared") {
            mmap(
              entry.hostAddress,
              entry.range.len,
              protFor(entry.hostWritable),
              Mman.MAP_SHARED | Mman.MAP_FIXED,
              entry.fd,
              entry.fileOffset,
            );
          } else {
            mmap(entry.hostAddress, entry.range.len, protFor(true), ANON_FIXED_FLAGS, -1, 0n);
            const home = this.#privateHomes.overlapping(entry.range.start, entry.range.end)[0];
            nameAnonymous(entry.hostAddress, entry.range.len, home?.name);
          }
        } catch (cause) {
          warn(`failed to map ${entry.range} of the guest address reservation again`, cause);
          continue;
        }
      }
      this.#insert(entry);
    }
    this.#changed();
  }

  /**
   * Takes whatever the table holds inside `range` out of it (trimming
   * entries that stick out) and, if anything was there, waits for the
   * readers' grace period: the caller is about to map over it. Returns
   * what it took out (the parts inside `range`).
   */
  #takeAway(range: MemoryRange): readonly VaEntry[] {
    const list = this.#entries;
    const start = Number(range.start);
    const end = Number(range.end);
    let taken: VaEntry[] | undefined;
    const saved = this.#saveWithin(range);
    for (;;) {
      const cursor = list.firstWhere(endsAbove, start);
      const old = list.at(cursor);
      if (old === undefined || old.startNumber >= end) break;
      list.removeAt(cursor);
      (taken ??= []).push(
        old.range.start < range.start || range.end < old.range.end ? old.slice(range) : old,
      );
      // Entries are ordered and disjoint: only the first overlapped one can
      // stick out on the left, only the last one on the right (and the
      // pieces left over lie outside `range`, so the loop never finds them).
      if (old.range.start < range.start) {
        this.#insert(old.slice(new MemoryRange(old.range.start, range.start)));
      }
      if (range.end < old.range.end) {
        this.#insert(old.slice(new MemoryRange(range.end, old.range.end)));
      }
    }
    if (taken === undefined) return NO_ENTRIES;
    this.#changed();
    this.#graceOrRestore(saved);
    return taken;
  }

  /**
   * The entries overlapping `range`, whole, while the table is shared (a
   * grace period can fail only then): what {@linkcode #graceOrRestore}
   * puts back.
   */
  #saveWithin(range: MemoryRange): VaEntry[] | undefined {
    if (this.#shared === undefined) return undefined;
    const list = this.#entries;
    const end = Number(range.end);
    const out: VaEntry[] = [];
    for (let i = list.firstWhere(endsAbove, Number(range.start));; i = list.next(i)) {
      const entry = list.at(i);
      if (entry === undefined || entry.startNumber >= end) break;
      out.push(entry);
    }
    return out;
  }

  /**
   * Waits for the readers' grace period; when that fails (membarrier
   * refused), the table gets `saved` back (what it held where it just
   * changed, whole) and the error is rethrown: the host memory was not
   * touched yet, so everything is as before.
   */
  #graceOrRestore(saved: VaEntry[] | undefined): void {
    try {
      this.#graceOver();
    } catch (error) {
      if (saved !== undefined && saved.length > 0) {
        const list = this.#entries;
        const lo = saved[0].startNumber;
        const hi = saved[saved.length - 1].endNumber;
        for (;;) {
          const cursor = list.firstWhere(endsAbove, lo);
          const entry = list.at(cursor);
          if (entry === undefined || entry.startNumber >= hi) break;
          list.removeAt(cursor);
        }
        for (const entry of saved) this.#insert(entry);
      }
      this.#changed();
      throw error;
    }
  }

  /** The table changed: a new generation, published to readers if shared. */
  #changed(): void {
    this.#generation++;
    if (this.#shared !== undefined) this.#publish();
  }

  /** Waits (bounded) until no reader can still be inside an access that saw the old table. */
  #graceOver(): void {
    const shared = this.#shared;
    if (shared !== undefined && shared.hasReaders) shared.synchronize();
  }

  #publish(): void {
    this.#shared!.publish(this.#entries);
  }
}

/**
 * Names an anonymous range where the kernel supports VMA names (the name is
 * cosmetic: kernels without CONFIG_ANON_VMA_NAME refuse with EINVAL, and
 * that is no error).
 */
function nameAnonymous(host: bigint, length: bigint, name: string | undefined): void {
  if (name !== undefined) tryAnonVmaName(host, length, name);
}

/** Waits for every promise; then rejects with the first rejection, if any. */
async function settleAll(jobs: readonly Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(jobs);
  const failed = results.find((r) => r.status === "rejected");
  if (failed !== undefined) throw failed.reason;
}
