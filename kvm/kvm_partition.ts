import { MinHeap } from "../collections/_min_heap.ts";
import { PageBitmap } from "../collections/_page_bitmap.ts";
import { type RangeKeys, SortedRangeList } from "../collections/_sorted_range_list.ts";
import { DisposedError } from "../diagnostics/disposed_error.ts";
import { warn } from "../diagnostics/warnings.ts";
import { Madv } from "../ffi/_constants.ts";
import { bufferAddress, hostIsZero } from "../ffi/_host_memory.ts";
import { madvise, mlock, munlock } from "../ffi/_mman.ts";
import { MemoryRange, PAGE_SIZE } from "../layout/memory_range.ts";
import type { Partition } from "../partition/partition.ts";
import { KvmCap, KvmDirtyLogFlag, KvmMemFlag } from "./kvm_constants.ts";
import { KvmPartitionError } from "./kvm_partition_error.ts";
import { cutOut, mergeAdjacent, PENDING_KEYS, type PendingSlot, sameJoins } from "./_slot_batch.ts";
import { KvmSystem } from "./kvm_system.ts";
import type { KvmVcpu } from "./kvm_vcpu.ts";
import type { KvmUserspaceMemoryRegion, KvmVm } from "./kvm_vm.ts";

/**
 * One memory slot of a {@linkcode KvmPartition}, as shown by {@linkcode KvmPartition.slots}.
 *
 * @example
 * ```ts
 * import type { KvmSlotInfo } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const row = (s: KvmSlotInfo) => `${s.slot} 0x${s.gpa.toString(16)} ${s.readonly ? "ro" : "rw"}`;
 * const rom = { slot: 1, gpa: 0xffff0000n, size: 0x10000n, hostAddress: 0n, readonly: true };
 * assert.equal(row({ ...rom, pinned: false }), "1 0xffff0000 ro");
 * ```
 */
export interface KvmSlotInfo {
  /** KVM slot number. */
  readonly slot: number;
  /** First guest physical address. */
  readonly gpa: bigint;
  /** Size in bytes. */
  readonly size: bigint;
  /** Host virtual address backing `gpa`. */
  readonly hostAddress: bigint;
  /** Whether the slot is `KVM_MEM_READONLY` (guest writes exit as MMIO). */
  readonly readonly: boolean;
  /** Whether some of the slot's host pages were locked by {@linkcode KvmPartition.pinRange}. */
  readonly pinned: boolean;
}

/**
 * Options of {@linkcode KvmPartition.create}.
 *
 * @example
 * ```ts
 * import { KvmPartition } from "../kvm.ts";
 * import type { KvmPartitionOptions } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const options: KvmPartitionOptions = { maxSlots: 64, mergeSlots: false };
 * using partition = KvmPartition.create(options);
 * assert.equal(partition.maxSlots, 64);
 * assert.equal(partition.mergesSlots, false);
 * ```
 */
export interface KvmPartitionOptions {
  /** Device path (default `/dev/kvm`). */
  readonly path?: string;
  /**
   * Use at most this many slots (default and upper bound: KVM's
   * `KVM_CAP_NR_MEMSLOTS`). Lets tests reach the limit cheaply.
   */
  readonly maxSlots?: number;
  /**
   * Whether a batch (a manager transaction) may merge adjacent new ranges
   * into one slot (default true; see {@linkcode KvmPartition.beginBatch}).
   * Off, every mapped range is its own slot, batches still skip what did
   * not change.
   */
  readonly mergeSlots?: boolean;
}

const PAGE_MASK = PAGE_SIZE - 1n;
/** The highest guest physical address a slot may cover. */
const LAST_ADDRESS = (1n << 64n) - 1n;

/** Slots keyed by their guest range. */
const SLOT_KEYS: RangeKeys<KvmUserspaceMemoryRegion> = {
  start: (s) => s.guestPhysAddr,
  end: (s) => s.guestPhysAddr + s.memorySize,
};

/** An open batch: the slots to delete and the ranges to map at its commit. */
interface SlotBatch {
  readonly dropped: Set<KvmUserspaceMemoryRegion>;
  readonly adds: SortedRangeList<PendingSlot>;
}

/** What an unmap leaves of a slot or range wholly inside it. */
const NOTHING_LEFT: readonly PendingSlot[] = [];

/** A range cut out of a merged slot by an unmap: the slot, the range, the slots of the rest. */
interface SlotSplit {
  readonly whole: PendingSlot;
  readonly gpa: bigint;
  readonly end: bigint;
  readonly rests: readonly KvmUserspaceMemoryRegion[];
}

function slotEnd(s: KvmUserspaceMemoryRegion): bigint {
  return s.guestPhysAddr + s.memorySize;
}

/**
 * A KVM virtual machine as a {@linkcode Partition}: each
 * {@linkcode KvmPartition.mapRange} becomes one memory slot
 * (`KVM_SET_USER_MEMORY_REGION`), read-only mappings use `KVM_MEM_READONLY`,
 * and unmapping deletes every slot inside the range. Slot numbers are
 * allocated lowest-free first and reused; slots are kept ordered by guest
 * address.
 *
 * The `executable` flag of `mapRange` is accepted but not enforced: KVM
 * memory slots have no execute permission.
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, MemoryLayout, Vtl } from "../mod.ts";
 * import { KvmPartition } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(2n << 20n, []));
 * using partition = KvmPartition.create();
 * using _attachment = manager.attachPartition(Vtl.Vtl0, partition); // maps RAM as slot 0
 * const ram = partition.slotAt(0x1000n)!;
 * assert.deepEqual([ram.slot, ram.gpa, ram.size, ram.readonly], [0, 0n, 0x200000n, false]);
 * // Its first page again, read-only, at 1 GiB:
 * partition.mapRange(ram.hostAddress, 0x1000n, 0x4000_0000n, false, false);
 * assert.deepEqual(partition.slots().map((s) => [s.slot, s.gpa, s.readonly]), [
 *   [0, 0n, false],
 *   [1, 0x4000_0000n, true],
 * ]);
 * partition.unmapRange(0x4000_0000n, 0x1000n);
 * assert.equal(partition.slots().length, 1);
 * ```
 */
export class KvmPartition implements Partition, Disposable {
  readonly #system: KvmSystem;
  readonly #vm: KvmVm;
  readonly #maxSlots: number;
  readonly #preFault: boolean;
  readonly #merge: boolean;
  /** The slots, in the kernel's own record shape, ordered by guest address. */
  readonly #slots = new SortedRangeList<KvmUserspaceMemoryRegion>(SLOT_KEYS);
  /** Numbers of slots with locked host pages. */
  readonly #pinned = new Set<number>();
  readonly #free = new MinHeap();
  #nextNumber = 0;
  readonly #vcpus = new Map<number, KvmVcpu>();
  #disposed = false;
  /** Whether writable slots carry `KVM_MEM_LOG_DIRTY_PAGES`. */
  #logging = false;
  /** Whether manual protect is on (decided when logging first starts). */
  #manualProtect: boolean | undefined;
  /**
   * Dirty bits kept by guest page, not yet reported: of slots deleted (or
   * re-created) while logging, and of every slot when logging stopped.
   */
  readonly #kept = new PageBitmap();
  /** A bitmap buffer per slot number, reused (its own ArrayBuffer: the kernel writes it). */
  readonly #bitmaps = new Map<number, { bytes: Uint8Array<ArrayBuffer>; address: bigint }>();
  /** Where the mapped ranges of a merged slot join, by slot number (merged slots only). */
  readonly #joins = new Map<number, readonly bigint[]>();
  /**
   * The last unmap that cut a range out of a merged slot (the slot, the
   * range, the slots made of the rest), until the next change: mapping the
   * range back as it was restores the merged slot.
   */
  #lastSplit: SlotSplit | undefined;
  /** What the last committed batch deleted and made (for `revertBatch`). */
  #lastCommit:
    | {
      readonly deleted: readonly PendingSlot[];
      readonly created: readonly KvmUserspaceMemoryRegion[];
    }
    | undefined;
  /** The open batch: slots to delete and ranges to map at its commit. */
  #batch: SlotBatch | undefined;

  private constructor(system: KvmSystem, vm: KvmVm, maxSlots: number, merge: boolean) {
    this.#system = system;
    this.#vm = vm;
    this.#maxSlots = maxSlots;
    this.#merge = merge;
    this.#preFault = vm.checkExtension(KvmCap.KVM_CAP_PRE_FAULT_MEMORY) > 0;
  }

  /**
   * Opens KVM and creates an empty VM.
   *
   * @param options Device path and slot limit.
   * @returns The partition, with no slots.
   * @throws {KvmPartitionError} `missingCapability` without read-only slots,
   *   `unsupportedApiVersion`.
   * @throws {RangeError} for a `maxSlots` that is not a positive integer.
   * @throws {SyscallError} when `/dev/kvm` cannot be opened or the VM created.
   */
  static create(options: KvmPartitionOptions = {}): KvmPartition {
    using stack = new DisposableStack();
    const system = stack.use(KvmSystem.open(options.path));
    const vm = stack.use(system.createVm());
    const kvmMax = vm.checkExtension(KvmCap.KVM_CAP_NR_MEMSLOTS);
    if (vm.checkExtension(KvmCap.KVM_CAP_READONLY_MEM) === 0) {
      throw new KvmPartitionError({
        kind: "missingCapability",
        capability: "KVM_CAP_READONLY_MEM",
        what: "read-only memory slots",
      });
    }
    const wanted = options.maxSlots ?? kvmMax;
    if (!Number.isInteger(wanted) || wanted < 1) {
      throw new RangeError(`maxSlots must be a positive integer, not ${wanted}`);
    }
    const partition = new KvmPartition(
      system,
      vm,
      Math.min(wanted, kvmMax),
      options.mergeSlots ?? true,
    );
    stack.move();
    return partition;
  }

  /**
   * The VM, for callers that set VM state themselves (TSS address, irqchip).
   * Changing memory slots through it bypasses this partition's slot table:
   * don't.
   */
  get unsafeVm(): KvmVm {
    this.#checkOpen();
    return this.#vm;
  }

  /** The KVM system fd the VM came from. */
  get unsafeSystem(): KvmSystem {
    this.#checkOpen();
    return this.#system;
  }

  /** Whether {@linkcode KvmPartition} has been disposed. */
  get isDisposed(): boolean {
    return this.#disposed;
  }

  /** How many slots this partition may use at once. */
  get maxSlots(): number {
    return this.#maxSlots;
  }

  /** Whether `prefetchRange` uses `KVM_PRE_FAULT_MEMORY` (else it populates host pages only). */
  get hasPreFaultMemory(): boolean {
    return this.#preFault;
  }

  /**
   * vCPU `id` of the VM, created on first use and owned (closed) by the
   * partition. vCPU 0 serves `prefetchRange` (`KVM_PRE_FAULT_MEMORY` is a
   * vCPU ioctl) and guest drivers such as `GuestProbe`.
   *
   * @param id The vCPU id (default 0).
   * @returns The vCPU, the same object on every call with the same id.
   */
  vcpu(id = 0): KvmVcpu {
    this.#checkOpen();
    let vcpu = this.#vcpus.get(id);
    if (vcpu === undefined) {
      vcpu = this.#vm.createVcpu(id);
      this.#vcpus.set(id, vcpu);
    }
    return vcpu;
  }

  /**
   * The current slots.
   *
   * @returns One row per slot, ordered by guest address.
   */
  slots(): KvmSlotInfo[] {
    return this.#slots.toArray().map((s) => this.#info(s));
  }

  /**
   * The slot containing guest address `gpa`.
   *
   * @param gpa A guest physical address.
   * @returns Its slot, or `undefined` where there is none.
   */
  slotAt(gpa: bigint): KvmSlotInfo | undefined {
    const s = this.#slots.find(gpa);
    return s === undefined ? undefined : this.#info(s);
  }

  /**
   * Maps `[hostAddress, hostAddress + size)` at guest `gpa` as a new slot
   * (read-only unless `writable`).
   *
   * @param hostAddress Host address of the first byte.
   * @param size Bytes, page aligned.
   * @param gpa Guest physical address, page aligned.
   * @param writable Whether the guest may write.
   * @param _executable Accepted, not enforced (KVM slots have no execute bit).
   * @throws {KvmPartitionError} `invalidRange` (empty or not page aligned),
   *   `overlap` (an existing slot intersects), `slotsExhausted`, or `map`
   *   with the ioctl's SyscallError as cause; nothing changes then.
   */
  mapRange(
    hostAddress: bigint,
    size: bigint,
    gpa: bigint,
    writable: boolean,
    _executable: boolean,
  ): void {
    this.#checkOpen();
    const end = gpa + size;
    // The last byte must have a 64-bit address. (Compared as `end - 1` with
    // 2^64 - 1, not `end` with 2^64: V8 compares bigints of one 64-bit digit
    // quickly but wider ones (2^64) through a slow generic path.)
    if (
      size <= 0n || gpa < 0n || (gpa & PAGE_MASK) !== 0n || (size & PAGE_MASK) !== 0n ||
      (hostAddress & PAGE_MASK) !== 0n || end - 1n > LAST_ADDRESS
    ) {
      throw new KvmPartitionError({ kind: "invalidRange", gpa, size, hostAddress });
    }
    const batch = this.#batch;
    const live = batch === undefined
      ? this.#slots.firstOverlapping(gpa, end)
      : this.#liveOverlap(gpa, end);
    if (live !== undefined) {
      throw new KvmPartitionError({
        kind: "overlap",
        start: gpa,
        end,
        slot: live.slot,
        slotStart: live.guestPhysAddr,
        slotEnd: slotEnd(live),
      });
    }
    const pending = batch?.adds.firstOverlapping(gpa, end);
    if (pending !== undefined) {
      // (Not a slot yet: its number is assigned at the commit.)
      throw new KvmPartitionError({
        kind: "overlap",
        start: gpa,
        end,
        slot: -1,
        slotStart: pending.gpa,
        slotEnd: pending.end,
      });
    }
    const range: PendingSlot = { gpa, end, host: hostAddress, writable, joins: [] };
    if (batch !== undefined) {
      batch.adds.insert(range);
      return;
    }
    const split = this.#lastSplit;
    this.#lastSplit = undefined;
    if (split !== undefined && this.#fillsSplit(split, range)) {
      // The range just cut out of a merged slot, mapped back as it was (a
      // failed change undoing itself): the merged slot comes back.
      this.#replace(split.rests, [split.whole]);
      return;
    }
    if (this.#slots.length >= this.#maxSlots) {
      throw new KvmPartitionError({ kind: "slotsExhausted", maxSlots: this.#maxSlots });
    }
    this.#create(range);
  }

  /**
   * Deletes every slot inside `[gpa, gpa + size)` (munlocking pinned ones).
   *
   * @param gpa Guest physical start.
   * @param size Bytes.
   * @throws {KvmPartitionError} `partialUnmap` for a slot only partly inside
   *   (raised before anything changes), `unmap` when the kernel refuses.
   */
  unmapRange(gpa: bigint, size: bigint): void {
    this.#checkOpen();
    const end = gpa + size;
    const batch = this.#batch;
    if (batch !== undefined) {
      this.#unmapInBatch(batch, gpa, end);
      return;
    }
    // What remains of slots only partly inside: refused before anything
    // changes unless the cuts fall where merged ranges join.
    const inside = this.#slots.overlapping(gpa, end);
    this.#lastSplit = undefined;
    if (inside.length === 1) {
      // One region's unmap (the hot path): one slot, deleted or cut.
      const s = inside[0];
      const rest = this.#slotRest(s, gpa, end);
      if (rest.length === 0) this.#delete(s);
      else {this.#lastSplit = {
          whole: this.#asPending(s),
          gpa,
          end,
          rests: this.#replace(inside, rest),
        };}
      return;
    }
    const rests = inside.map((s) => this.#slotRest(s, gpa, end));
    for (let i = inside.length - 1; i >= 0; i--) {
      if (rests[i].length === 0) this.#delete(inside[i]);
      else this.#replace([inside[i]], rests[i]);
    }
  }

  /** {@linkcode KvmPartition.unmapRange} inside the open `batch`: recorded only. */
  #unmapInBatch(batch: SlotBatch, gpa: bigint, end: bigint): void {
    const inside = this.#slots.overlapping(gpa, end).filter((s) => !batch.dropped.has(s));
    const rests = inside.map((s) => this.#slotRest(s, gpa, end));
    const pending = batch.adds.overlapping(gpa, end);
    const pendingRests = pending.map((p) => this.#cut(p, -1, gpa, end));
    inside.forEach((s, i) => {
      batch.dropped.add(s);
      for (const part of rests[i]) batch.adds.insert(part);
    });
    pending.forEach((p, i) => {
      batch.adds.remove(p);
      for (const part of pendingRests[i]) batch.adds.insert(part);
    });
  }

  /** What remains of slot `s` once `[gpa, end)` is unmapped (see {@linkcode #cut}). */
  #slotRest(s: KvmUserspaceMemoryRegion, gpa: bigint, end: bigint): readonly PendingSlot[] {
    if (s.guestPhysAddr >= gpa && slotEnd(s) <= end) return NOTHING_LEFT;
    return this.#cut(this.#asPending(s), s.slot, gpa, end);
  }

  /**
   * What remains of `range` (slot number `slot`, -1 for a pending range)
   * once `[gpa, end)` is unmapped; throws `partialUnmap` when that would cut
   * one of its mapped ranges.
   */
  #cut(range: PendingSlot, slot: number, gpa: bigint, end: bigint): readonly PendingSlot[] {
    if (range.gpa >= gpa && range.end <= end) return NOTHING_LEFT;
    const rest = cutOut(range, gpa, end);
    if (rest !== undefined) return rest;
    throw new KvmPartitionError({
      kind: "partialUnmap",
      start: gpa,
      end,
      slot,
      slotStart: range.gpa,
      slotEnd: range.end,
    });
  }

  /**
   * Starts a batch: until {@linkcode KvmPartition.commitBatch},
   * {@linkcode KvmPartition.mapRange} and {@linkcode KvmPartition.unmapRange}
   * only record what they would do (checked as they would check it), and
   * the commit makes the fewest slot changes that give the same guest view:
   * a range unmapped and mapped again as it was keeps its slot, and adjacent
   * new ranges with the same flags and contiguous host memory share one slot
   * (up to 2 MiB; never merged with slots the batch did not touch). Refused
   * (`false`, nothing starts) while a batch is open or a slot is pinned.
   *
   * @returns Whether the batch started.
   * @throws {DisposedError} once disposed.
   */
  beginBatch(): boolean {
    this.#checkOpen();
    if (this.#batch !== undefined || this.#pinned.size > 0) return false;
    this.#lastCommit = undefined;
    this.#batch = { dropped: new Set(), adds: new SortedRangeList(PENDING_KEYS) };
    return true;
  }

  /**
   * Applies the open batch: deletes the slots it unmapped, then creates the
   * (merged) slots it mapped, keeping the dirty bits of deleted slots while
   * logging. All or nothing: on failure the slots are as before the batch.
   *
   * @throws {KvmPartitionError} `slotsExhausted` (nothing changed), `map` or
   *   `unmap` with the ioctl's error as cause (the slots were put back).
   * @throws {DisposedError} once disposed.
   */
  commitBatch(): void {
    this.#checkOpen();
    const batch = this.#batch;
    this.#batch = undefined;
    if (batch === undefined) return;
    const dropped = batch.dropped;
    // A slot mapped again exactly as it was (its ranges, flags and host
    // addresses) stays; the other new ranges merge where they can.
    const kept = new Set<PendingSlot>();
    for (const s of [...dropped]) {
      const tiles = batch.adds.overlapping(s.guestPhysAddr, slotEnd(s));
      if (this.#tiledBy(s, tiles)) {
        dropped.delete(s);
        for (const t of tiles) kept.add(t);
      }
    }
    const adds = batch.adds.toArray().filter((a) => !kept.has(a));
    const creates = this.#merge ? mergeAdjacent(adds) : adds;
    if (this.#slots.length - dropped.size + creates.length > this.#maxSlots) {
      throw new KvmPartitionError({ kind: "slotsExhausted", maxSlots: this.#maxSlots });
    }
    const olds = [...dropped].sort((a, b) => (a.guestPhysAddr < b.guestPhysAddr ? -1 : 1));
    const deleted = olds.map((old) => this.#asPending(old));
    const created = this.#replace(olds, creates);
    this.#lastCommit = { deleted, created };
  }

  /**
   * Undoes the last committed batch exactly (the slots it deleted come
   * back as they were, merged or not), if no slot it made has changed
   * since and nothing was mapped where they were; for a failed transaction
   * taking its changes back.
   *
   * @returns Whether it did (false: nothing changed).
   * @throws {KvmPartitionError} `map` or `unmap` (the slots are then as
   *   before the call).
   * @throws {DisposedError} once disposed.
   */
  revertBatch(): boolean {
    this.#checkOpen();
    const last = this.#lastCommit;
    this.#lastCommit = undefined;
    if (last === undefined || this.#batch !== undefined) return false;
    if (!last.created.every((s) => this.#slots.find(s.guestPhysAddr) === s)) return false;
    // Nothing mapped since where the deleted slots come back.
    const created = new Set(last.created);
    for (const range of last.deleted) {
      if (this.#slots.overlapping(range.gpa, range.end).some((s) => !created.has(s))) return false;
    }
    this.#replace(last.created, last.deleted);
    return true;
  }

  /**
   * Forgets the open batch: nothing it recorded happens.
   *
   * @throws {DisposedError} once disposed.
   */
  abortBatch(): void {
    this.#checkOpen();
    this.#batch = undefined;
  }

  /** Whether `tiles` (ascending) make up slot `s` exactly: range, flags, host addresses, joins. */
  #tiledBy(s: KvmUserspaceMemoryRegion, tiles: readonly PendingSlot[]): boolean {
    const writable = (s.flags & KvmMemFlag.KVM_MEM_READONLY) === 0;
    if (tiles.length === 0 || s.flags !== this.#flagsFor(writable)) return false;
    const joins: bigint[] = [];
    let at = s.guestPhysAddr;
    for (const t of tiles) {
      if (t.gpa !== at || t.writable !== writable) return false;
      if (t.host !== s.userspaceAddr + (t.gpa - s.guestPhysAddr)) return false;
      if (at !== s.guestPhysAddr) joins.push(at);
      joins.push(...t.joins);
      at = t.end;
    }
    return at === slotEnd(s) && sameJoins(joins, this.#joins.get(s.slot) ?? []);
  }

  /** Whether mapping `range` refills the hole `split` cut, as it was (the rest still there). */
  #fillsSplit(
    split: SlotSplit,
    range: PendingSlot,
  ): boolean {
    const whole = split.whole;
    return range.gpa === split.gpa && range.end === split.end &&
      range.writable === whole.writable && range.host === whole.host + (range.gpa - whole.gpa) &&
      split.rests.every((s) => this.#slots.find(s.guestPhysAddr) === s);
  }

  /** A slot that the open batch has not dropped overlapping `[gpa, end)`. */
  #liveOverlap(gpa: bigint, end: bigint): KvmUserspaceMemoryRegion | undefined {
    const batch = this.#batch;
    return this.#slots.overlapping(gpa, end).find((s) => !batch?.dropped.has(s));
  }

  /** Slot `s` as a range (for cutting it). */
  #asPending(s: KvmUserspaceMemoryRegion): PendingSlot {
    return {
      gpa: s.guestPhysAddr,
      end: slotEnd(s),
      host: s.userspaceAddr,
      writable: (s.flags & KvmMemFlag.KVM_MEM_READONLY) === 0,
      joins: this.#joins.get(s.slot) ?? [],
    };
  }

  #flagsFor(writable: boolean): number {
    if (!writable) return KvmMemFlag.KVM_MEM_READONLY;
    return this.#logging ? KvmMemFlag.KVM_MEM_LOG_DIRTY_PAGES : 0;
  }

  /** Creates one slot for `range` (lowest free number). */
  #create(range: PendingSlot): KvmUserspaceMemoryRegion {
    const region: KvmUserspaceMemoryRegion = {
      slot: this.#free.pop() ?? this.#nextNumber++,
      flags: this.#flagsFor(range.writable),
      guestPhysAddr: range.gpa,
      memorySize: range.end - range.gpa,
      userspaceAddr: range.host,
    };
    try {
      this.#vm.setUserMemoryRegion(region);
    } catch (cause) {
      this.#free.push(region.slot);
      throw new KvmPartitionError(
        { kind: "map", slot: region.slot, start: range.gpa, end: range.end },
        { cause },
      );
    }
    this.#slots.insert(region);
    if (range.joins.length > 0) this.#joins.set(region.slot, range.joins);
    return region;
  }

  /**
   * Deletes `olds`, then creates `news`; all or nothing (on failure what
   * was created is deleted and what was deleted is created again).
   */
  #replace(
    olds: readonly KvmUserspaceMemoryRegion[],
    news: readonly PendingSlot[],
  ): KvmUserspaceMemoryRegion[] {
    const deleted: PendingSlot[] = [];
    const created: KvmUserspaceMemoryRegion[] = [];
    try {
      for (const old of olds) {
        const range = this.#asPending(old);
        this.#delete(old);
        deleted.push(range);
      }
      for (const range of news) created.push(this.#create(range));
      return created;
    } catch (error) {
      for (const s of created.reverse()) {
        try {
          this.#delete(s);
        } catch (cause) {
          warn(`failed to delete memory slot ${s.slot} again`, cause);
        }
      }
      for (const range of deleted.reverse()) {
        try {
          this.#create(range);
        } catch (cause) {
          warn(
            `failed to restore the memory slot at ${new MemoryRange(range.gpa, range.end)}`,
            cause,
          );
        }
      }
      throw error;
    }
  }

  /**
   * Faults in the slots' pages inside `[gpa, gpa + size)`: with
   * `KVM_PRE_FAULT_MEMORY` (through vCPU 0) where KVM has it, else by
   * populating the host pages (`MADV_POPULATE_WRITE`, or
   * `MADV_POPULATE_READ` for read-only slots).
   *
   * @param gpa Guest physical start.
   * @param size Bytes.
   * @throws {KvmPartitionError} `prefetch`, with the OS error as cause.
   */
  prefetchRange(gpa: bigint, size: bigint): void {
    this.#checkOpen();
    for (const [s, start, len] of this.#pieces(gpa, size)) {
      try {
        if (this.#preFault) {
          this.vcpu().preFaultMemory(start, len);
        } else {
          const readonly = (s.flags & KvmMemFlag.KVM_MEM_READONLY) !== 0;
          const advice = readonly ? Madv.MADV_POPULATE_READ : Madv.MADV_POPULATE_WRITE;
          madvise(s.userspaceAddr + (start - s.guestPhysAddr), len, advice);
        }
      } catch (cause) {
        throw new KvmPartitionError(
          { kind: "prefetch", slot: s.slot, start, end: start + len },
          { cause },
        );
      }
    }
  }

  /**
   * Locks (`mlock`) the host pages of the slots inside `[gpa, gpa + size)`.
   *
   * @param gpa Guest physical start.
   * @param size Bytes.
   * @throws {KvmPartitionError} `pin`, with the OS error as cause.
   */
  pinRange(gpa: bigint, size: bigint): void {
    this.#checkOpen();
    for (const [s, start, len] of this.#pieces(gpa, size)) {
      try {
        mlock(s.userspaceAddr + (start - s.guestPhysAddr), len);
      } catch (cause) {
        throw new KvmPartitionError(
          { kind: "pin", slot: s.slot, start, end: start + len },
          { cause },
        );
      }
      this.#pinned.add(s.slot);
    }
  }

  /** Whether batches merge adjacent ranges into one slot (`mergeSlots`). */
  get mergesSlots(): boolean {
    return this.#merge;
  }

  /** Whether dirty page logging is on ({@linkcode KvmPartition.startDirtyLogging}). */
  get isDirtyLogging(): boolean {
    return this.#logging;
  }

  /**
   * Whether the dirty log is read with manual protect
   * (`KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`: `KVM_GET_DIRTY_LOG` then
   * `KVM_CLEAR_DIRTY_LOG`), once logging has started; `undefined` before.
   */
  get manualDirtyLogProtect(): boolean | undefined {
    return this.#manualProtect;
  }

  /**
   * Turns dirty page logging on: every writable slot gets
   * `KVM_MEM_LOG_DIRTY_PAGES` in place (same slot number, same range: KVM
   * changes only the flags), and so does every writable slot made from now
   * on. Read-only slots are left alone (the guest cannot write them). On the
   * first call, manual protect is enabled where KVM has it. No-op when on.
   *
   * @throws {KvmPartitionError} `dirtyLog` with the ioctl's SyscallError as
   *   cause; the slots changed so far are changed back.
   * @example
   * ```ts
   * import { GuestMemoryBuilder, MemoryLayout, Vtl } from "../mod.ts";
   * import { KvmPartition } from "../kvm.ts";
   * import { GuestProbe } from "../testing.ts";
   * import assert from "node:assert/strict";
   *
   * using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(2n << 20n, []));
   * using partition = KvmPartition.create();
   * using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
   * using probe = GuestProbe.create(partition); // a guest that does one access at a time
   * partition.startDirtyLogging();
   * probe.store(0x3000n, 4, 1);
   * probe.store(0x5004n, 4, 1);
   * const dirty: [bigint, number, number][] = [];
   * partition.takeDirtyLog((gpa, words, pages) => dirty.push([gpa, words[0], pages]));
   * assert.deepEqual(dirty, [[0n, 0b101000, 512]]); // pages 3 and 5 of the 512-page RAM slot
   * ```
   */
  startDirtyLogging(): void {
    this.#checkOpen();
    if (this.#logging) return;
    if (this.#manualProtect === undefined) {
      const allowed = this.#vm.checkExtension(KvmCap.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
      const enable = KvmDirtyLogFlag.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
      let manual = false;
      if ((allowed & enable) !== 0) {
        try {
          this.#vm.enableCap({
            cap: KvmCap.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
            flags: 0,
            args: [BigInt(enable)],
          });
          manual = true;
        } catch (cause) {
          throw new KvmPartitionError({ kind: "dirtyLog", slot: -1, start: 0n, end: 0n }, {
            cause,
          });
        }
      }
      this.#manualProtect = manual;
    }
    this.#setLogFlag(true);
    this.#logging = true;
  }

  /**
   * Turns dirty page logging off. What the guest wrote until now is kept
   * (read from every slot first) and reported by the next
   * {@linkcode KvmPartition.takeDirtyLog}. No-op when off.
   *
   * @throws {KvmPartitionError} `dirtyLog` when a log cannot be read or a
   *   slot changed (logging then stays on).
   */
  stopDirtyLogging(): void {
    this.#checkOpen();
    if (!this.#logging) return;
    this.#keepLogs();
    this.#setLogFlag(false);
    this.#logging = false;
  }

  /**
   * Reports the pages the guest wrote since the previous call (or since
   * logging started) and forgets them: reads each logged slot's bitmap
   * (`KVM_GET_DIRTY_LOG`; with manual protect, then `KVM_CLEAR_DIRTY_LOG`
   * for the pages found, which write-protects them again), plus the bits
   * kept from slots deleted or re-created while logging (a PAM flip, a
   * move) and from the last stop. `visit(gpa, words, pages)`: bit i of the
   * little-endian words is the page at `gpa + 4096 i`, for `pages` pages;
   * `words` is reused after the call returns.
   *
   * @param visit Called once per slot with dirty pages and per kept chunk.
   * @throws {KvmPartitionError} `dirtyLog` with the ioctl's SyscallError as cause.
   */
  takeDirtyLog(visit: (gpa: bigint, words: Uint32Array, pages: number) => void): void {
    this.#checkOpen();
    if (this.#logging) {
      for (const s of this.#slots.toArray()) {
        if ((s.flags & KvmMemFlag.KVM_MEM_LOG_DIRTY_PAGES) === 0) continue;
        const bitmap = this.#readLog(s, true);
        if (bitmap === undefined) continue;
        visit(s.guestPhysAddr, new Uint32Array(bitmap.buffer), Number(s.memorySize / PAGE_SIZE));
      }
    }
    this.#kept.forEachChunk((firstPage, words, pages) => {
      visit(BigInt(firstPage) * PAGE_SIZE, words, pages);
    });
    this.#kept.clear();
  }

  /** Deletes all slots, closes the vCPUs, the VM and `/dev/kvm`; idempotent. */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    const errors: unknown[] = [];
    const slots = this.#slots.toArray();
    for (let i = slots.length - 1; i >= 0; i--) {
      try {
        this.#delete(slots[i]);
      } catch (err) {
        errors.push(err);
      }
    }
    this.#slots.clear();
    const closers: Disposable[] = [...this.#vcpus.values(), this.#vm, this.#system];
    this.#vcpus.clear();
    for (const closer of closers) {
      try {
        closer[Symbol.dispose]();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, "failed to dispose kvm partition");
  }

  /**
   * The dirty bitmap of logged slot `s`, or `undefined` when no bit is
   * set; with `clear` and manual protect, the bits found are cleared in
   * KVM too (without manual protect, reading clears).
   */
  #readLog(s: KvmUserspaceMemoryRegion, clear: boolean): Uint8Array<ArrayBuffer> | undefined {
    const pages = Number(s.memorySize / PAGE_SIZE);
    const bytes = Math.ceil(pages / 64) * 8;
    let log = this.#bitmaps.get(s.slot);
    if (log === undefined || log.bytes.length !== bytes) {
      const buffer = new Uint8Array(new ArrayBuffer(bytes));
      log = { bytes: buffer, address: bufferAddress(buffer) };
      this.#bitmaps.set(s.slot, log);
    }
    const bitmap = log.bytes;
    try {
      this.#vm.getDirtyLog({ slot: s.slot, dirtyBitmap: bitmap });
      if (hostIsZero(log.address, bytes)) return undefined;
      if (clear && this.#manualProtect) {
        this.#vm.clearDirtyLog({
          slot: s.slot,
          numPages: pages,
          firstPage: 0n,
          dirtyBitmap: bitmap,
        });
      }
      return bitmap;
    } catch (cause) {
      throw new KvmPartitionError(
        { kind: "dirtyLog", slot: s.slot, start: s.guestPhysAddr, end: slotEnd(s) },
        { cause },
      );
    }
  }

  /**
   * Moves the bits of logged slot `s` into the kept bitmap (clearing them
   * in KVM unless the slot is about to be deleted anyway).
   */
  #keepLog(s: KvmUserspaceMemoryRegion, clear = true): void {
    const bitmap = this.#readLog(s, clear);
    if (bitmap === undefined) return;
    this.#kept.orWords(
      Number(s.guestPhysAddr / PAGE_SIZE),
      new Uint32Array(bitmap.buffer),
      Number(s.memorySize / PAGE_SIZE),
    );
  }

  /** Moves the bits of every logged slot into the kept bitmap. */
  #keepLogs(): void {
    for (const s of this.#slots.toArray()) {
      if ((s.flags & KvmMemFlag.KVM_MEM_LOG_DIRTY_PAGES) !== 0) this.#keepLog(s);
    }
  }

  /**
   * Sets or clears `KVM_MEM_LOG_DIRTY_PAGES` on every writable slot, in
   * place; on failure the slots changed so far are changed back.
   */
  #setLogFlag(on: boolean): void {
    const changed: KvmUserspaceMemoryRegion[] = [];
    const flip = (s: KvmUserspaceMemoryRegion): KvmUserspaceMemoryRegion => {
      const next = { ...s, flags: s.flags ^ KvmMemFlag.KVM_MEM_LOG_DIRTY_PAGES };
      this.#vm.setUserMemoryRegion(next);
      this.#slots.remove(s);
      this.#slots.insert(next);
      return next;
    };
    for (const s of this.#slots.toArray()) {
      if ((s.flags & KvmMemFlag.KVM_MEM_READONLY) !== 0) continue;
      if (((s.flags & KvmMemFlag.KVM_MEM_LOG_DIRTY_PAGES) !== 0) === on) continue;
      try {
        changed.push(flip(s));
      } catch (cause) {
        for (const c of changed.reverse()) {
          try {
            flip(c);
          } catch (undo) {
            warn(`failed to restore the flags of memory slot ${c.slot}`, undo);
          }
        }
        throw new KvmPartitionError(
          { kind: "dirtyLog", slot: s.slot, start: s.guestPhysAddr, end: slotEnd(s) },
          { cause },
        );
      }
    }
  }

  #checkOpen(): void {
    if (this.#disposed) throw new DisposedError({ object: "kvm partition" });
  }

  #info(s: KvmUserspaceMemoryRegion): KvmSlotInfo {
    return {
      slot: s.slot,
      gpa: s.guestPhysAddr,
      size: s.memorySize,
      hostAddress: s.userspaceAddr,
      readonly: (s.flags & KvmMemFlag.KVM_MEM_READONLY) !== 0,
      pinned: this.#pinned.has(s.slot),
    };
  }

  /** The parts of `[gpa, gpa + size)` covered by slots: `[slot, start, length]`. */
  #pieces(gpa: bigint, size: bigint): [KvmUserspaceMemoryRegion, bigint, bigint][] {
    const end = gpa + size;
    return this.#slots.overlapping(gpa, end).map((s) => {
      const start = s.guestPhysAddr > gpa ? s.guestPhysAddr : gpa;
      const stop = slotEnd(s) < end ? slotEnd(s) : end;
      return [s, start, stop - start];
    });
  }

  /**
   * Deletes slot `s` in the kernel, then from the table (the same record
   * with size 0). A logged slot's dirty bits are kept first.
   */
  #delete(s: KvmUserspaceMemoryRegion): void {
    if ((s.flags & KvmMemFlag.KVM_MEM_LOG_DIRTY_PAGES) !== 0 && !this.#disposed) {
      this.#keepLog(s, false);
    }
    try {
      this.#vm.setUserMemoryRegion({ ...s, memorySize: 0n });
    } catch (cause) {
      throw new KvmPartitionError(
        { kind: "unmap", slot: s.slot, start: s.guestPhysAddr, end: slotEnd(s) },
        { cause },
      );
    }
    this.#slots.remove(s);
    this.#joins.delete(s.slot);
    this.#free.push(s.slot);
    if (this.#pinned.delete(s.slot)) {
      try {
        munlock(s.userspaceAddr, s.memorySize);
      } catch (cause) {
        warn(
          `failed to unpin ${new MemoryRange(s.guestPhysAddr, slotEnd(s))} after unmapping it`,
          cause,
        );
      }
    }
  }
}
