import { warn } from "../diagnostics/warnings.ts";
import { Madv } from "../ffi/_constants.ts";
import { KvmCap, KvmMemFlag } from "./kvm_constants.ts";
import { KvmSystem } from "./kvm_system.ts";
import type { KvmVcpu } from "./kvm_vcpu.ts";
import type { KvmVm } from "./kvm_vm.ts";
import { madvise, mlock, munlock } from "../ffi/_mman.ts";
import { MemoryRange, PAGE_SIZE } from "../layout/memory_range.ts";
import type { Partition } from "../partition/partition.ts";
import { KvmPartitionError } from "./kvm_partition_error.ts";

/**
 * One memory slot of a {@linkcode KvmPartition}, as shown by {@linkcode KvmPartition.slots}.
 *
 * @example
 * ```ts
 * import type { KvmSlotInfo } from "./kvm_partition.ts";
 * const row = (s: KvmSlotInfo) => `${s.slot} 0x${s.gpa.toString(16)} ${s.readonly ? "ro" : "rw"}`;
 * console.log(row({ slot: 0, gpa: 0n, size: 4096n, hostAddress: 0n, readonly: false, pinned: false }));
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
 * import type { KvmPartitionOptions } from "./kvm_partition.ts";
 * const options: KvmPartitionOptions = { maxSlots: 64 };
 * console.log(options.maxSlots);
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
}

interface Slot {
  slot: number;
  gpa: bigint;
  size: bigint;
  hostAddress: bigint;
  readonly: boolean;
  pinned: boolean;
}

/** A binary min-heap of freed slot numbers, so the lowest free number is reused first. */
class FreeNumbers {
  readonly #heap: number[] = [];

  get size(): number {
    return this.#heap.length;
  }

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

  pop(): number {
    const h = this.#heap;
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

// Single-element insert and remove by hand: `splice` allocates its result
// array and takes a slow generic path, several times the cost here.
function insertAt<T>(list: T[], index: number, item: T): void {
  list.push(item);
  for (let i = list.length - 1; i > index; i--) list[i] = list[i - 1];
  list[index] = item;
}

function removeAt<T>(list: T[], index: number): void {
  for (let i = index + 1; i < list.length; i++) list[i - 1] = list[i];
  list.pop();
}

const PAGE_MASK = PAGE_SIZE - 1n;
/** The highest guest physical address a slot may cover. */
const LAST_ADDRESS = (1n << 64n) - 1n;

function hex(value: bigint): string {
  return `0x${value.toString(16)}`;
}

function rangeText(gpa: bigint, size: bigint): string {
  return `${hex(gpa)}-${hex(gpa + size)}`;
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
 * ```ts ignore
 * import { KvmPartition } from "./kvm_partition.ts";
 * using partition = KvmPartition.create();
 * partition.mapRange(hostAddress, 0x200000n, 0n, true, true);
 * console.log(partition.slots()); // [{ slot: 0, gpa: 0n, size: 2097152n, ... }]
 * partition.unmapRange(0n, 0x200000n);
 * ```
 */
export class KvmPartition implements Partition, Disposable {
  readonly #system: KvmSystem;
  readonly #vm: KvmVm;
  readonly #maxSlots: number;
  readonly #preFault: boolean;
  /** Slots ordered by `gpa` (they never overlap). */
  readonly #slots: Slot[] = [];
  readonly #free = new FreeNumbers();
  #nextNumber = 0;
  #vcpu: KvmVcpu | undefined;
  #disposed = false;

  private constructor(system: KvmSystem, vm: KvmVm, maxSlots: number) {
    this.#system = system;
    this.#vm = vm;
    this.#maxSlots = maxSlots;
    this.#preFault = vm.checkExtension(KvmCap.KVM_CAP_PRE_FAULT_MEMORY) > 0;
  }

  /** Opens KVM and creates an empty VM. */
  static create(options: KvmPartitionOptions = {}): KvmPartition {
    const system = KvmSystem.open(options.path);
    let vm: KvmVm | undefined;
    try {
      vm = system.createVm();
      const kvmMax = vm.checkExtension(KvmCap.KVM_CAP_NR_MEMSLOTS);
      if (vm.checkExtension(KvmCap.KVM_CAP_READONLY_MEM) === 0) {
        throw new Error("kvm does not support read-only memory slots (KVM_CAP_READONLY_MEM)");
      }
      const wanted = options.maxSlots ?? kvmMax;
      if (!Number.isInteger(wanted) || wanted < 1) {
        throw new RangeError(`maxSlots must be a positive integer, not ${wanted}`);
      }
      return new KvmPartition(system, vm, Math.min(wanted, kvmMax));
    } catch (err) {
      vm?.[Symbol.dispose]();
      system[Symbol.dispose]();
      throw err;
    }
  }

  /** The VM (for callers that create vCPUs or set VM state themselves). */
  get vm(): KvmVm {
    this.#checkOpen();
    return this.#vm;
  }

  /** The KVM system fd the VM came from. */
  get system(): KvmSystem {
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
   * vCPU 0 of the VM, created on first use and owned (closed) by the
   * partition. Used by `prefetchRange` (`KVM_PRE_FAULT_MEMORY` is a vCPU
   * ioctl) and by guest drivers such as `GuestProbe`.
   */
  vcpu(): KvmVcpu {
    this.#checkOpen();
    this.#vcpu ??= this.#vm.createVcpu(0);
    return this.#vcpu;
  }

  /** The current slots, ordered by guest address. */
  slots(): KvmSlotInfo[] {
    return this.#slots.map((s) => ({ ...s }));
  }

  /** The slot containing guest address `gpa`, if any. */
  slotAt(gpa: bigint): KvmSlotInfo | undefined {
    const index = this.#lowerBound(gpa + 1n) - 1;
    const s = this.#slots[index];
    return s !== undefined && gpa < s.gpa + s.size ? { ...s } : undefined;
  }

  /**
   * Maps `[hostAddress, hostAddress + size)` at guest `gpa` as a new slot
   * (read-only unless `writable`). Throws {@linkcode KvmPartitionError}:
   * `invalid_range` (empty or not page aligned), `overlap` (an existing slot
   * intersects), `slots_exhausted`, or `map` with the ioctl's SyscallError.
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
      throw new KvmPartitionError(
        "invalid_range",
        `invalid memory slot ${hex(size)} bytes at ${hex(gpa)} from host ${hex(hostAddress)}`,
      );
    }
    const index = this.#lowerBound(gpa);
    const before = this.#slots[index - 1];
    const after = this.#slots[index];
    const clash = before !== undefined && before.gpa + before.size > gpa
      ? before
      : after !== undefined && after.gpa < end
      ? after
      : undefined;
    if (clash !== undefined) {
      throw new KvmPartitionError(
        "overlap",
        `range ${rangeText(gpa, size)} overlaps memory slot ${clash.slot} at ${
          rangeText(clash.gpa, clash.size)
        }`,
      );
    }
    if (this.#slots.length >= this.#maxSlots) {
      throw new KvmPartitionError(
        "slots_exhausted",
        `no free memory slot: all ${this.#maxSlots} slots are in use`,
      );
    }
    const number = this.#free.size > 0 ? this.#free.pop() : this.#nextNumber++;
    const flags = writable ? 0 : KvmMemFlag.KVM_MEM_READONLY;
    try {
      this.#vm.setUserMemoryRegion(number, flags, gpa, size, hostAddress);
    } catch (cause) {
      this.#free.push(number);
      throw new KvmPartitionError(
        "map",
        `failed to create memory slot ${number} at ${rangeText(gpa, size)}`,
        cause,
      );
    }
    insertAt(this.#slots, index, {
      slot: number,
      gpa,
      size,
      hostAddress,
      readonly: !writable,
      pinned: false,
    });
  }

  /**
   * Deletes every slot inside `[gpa, gpa + size)` (munlocking pinned ones).
   * A slot only partly inside is a `partial_unmap` error, raised before
   * anything changes.
   */
  unmapRange(gpa: bigint, size: bigint): void {
    this.#checkOpen();
    const end = gpa + size;
    const first = this.#firstIntersecting(gpa);
    const last = this.#endIntersecting(first, end);
    for (let i = first; i < last; i++) {
      const s = this.#slots[i];
      if (s.gpa < gpa || s.gpa + s.size > end) {
        throw new KvmPartitionError(
          "partial_unmap",
          `cannot unmap ${rangeText(gpa, size)}: memory slot ${s.slot} at ${
            rangeText(s.gpa, s.size)
          } is only partly inside`,
        );
      }
    }
    for (let i = last - 1; i >= first; i--) this.#deleteAt(i);
  }

  /**
   * Faults in the slots' pages inside `[gpa, gpa + size)`: with
   * `KVM_PRE_FAULT_MEMORY` (through {@linkcode KvmPartition.vcpu}) where KVM
   * has it, else by populating the host pages (`MADV_POPULATE_WRITE`, or
   * `MADV_POPULATE_READ` for read-only slots). Throws `prefetch`.
   */
  prefetchRange(gpa: bigint, size: bigint): void {
    this.#checkOpen();
    for (const [s, start, len] of this.#pieces(gpa, size)) {
      try {
        if (this.#preFault) {
          this.vcpu().preFaultMemory(start, len);
        } else {
          const advice = s.readonly ? Madv.MADV_POPULATE_READ : Madv.MADV_POPULATE_WRITE;
          madvise(s.hostAddress + (start - s.gpa), len, advice);
        }
      } catch (cause) {
        throw new KvmPartitionError(
          "prefetch",
          `failed to prefetch ${rangeText(start, len)} of memory slot ${s.slot}`,
          cause,
        );
      }
    }
  }

  /** Locks (`mlock`) the host pages of the slots inside `[gpa, gpa + size)`. Throws `pin`. */
  pinRange(gpa: bigint, size: bigint): void {
    this.#checkOpen();
    for (const [s, start, len] of this.#pieces(gpa, size)) {
      try {
        mlock(s.hostAddress + (start - s.gpa), len);
      } catch (cause) {
        throw new KvmPartitionError(
          "pin",
          `failed to pin ${rangeText(start, len)} of memory slot ${s.slot}`,
          cause,
        );
      }
      s.pinned = true;
    }
  }

  /** Deletes all slots, closes the vCPU, the VM and `/dev/kvm`; idempotent. */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    const errors: unknown[] = [];
    for (let i = this.#slots.length - 1; i >= 0; i--) {
      try {
        this.#deleteAt(i);
      } catch (err) {
        errors.push(err);
        this.#slots.splice(i, 1);
      }
    }
    for (
      const close of [
        () => this.#vcpu?.[Symbol.dispose](),
        () => this.#vm[Symbol.dispose](),
        () => this.#system[Symbol.dispose](),
      ]
    ) {
      try {
        close();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, "failed to dispose kvm partition");
  }

  #checkOpen(): void {
    if (this.#disposed) throw new Error("kvm partition is already disposed");
  }

  /** Index of the first slot with `gpa >= address`. */
  #lowerBound(address: bigint): number {
    let lo = 0;
    let hi = this.#slots.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#slots[mid].gpa < address) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Index of the first slot that ends above `start`. */
  #firstIntersecting(start: bigint): number {
    const first = this.#lowerBound(start);
    const previous = this.#slots[first - 1];
    return previous !== undefined && previous.gpa + previous.size > start ? first - 1 : first;
  }

  /** One past the last slot from `first` on that begins below `end`. */
  #endIntersecting(first: number, end: bigint): number {
    let last = first;
    while (last < this.#slots.length && this.#slots[last].gpa < end) last++;
    return last;
  }

  /** The parts of `[gpa, gpa + size)` covered by slots: `[slot, start, length]`. */
  #pieces(gpa: bigint, size: bigint): [Slot, bigint, bigint][] {
    const range = { start: gpa, end: gpa + size };
    const first = this.#firstIntersecting(range.start);
    const last = this.#endIntersecting(first, range.end);
    return this.#slots.slice(first, last).map((s) => {
      const start = s.gpa > range.start ? s.gpa : range.start;
      const end = s.gpa + s.size < range.end ? s.gpa + s.size : range.end;
      return [s, start, end - start];
    });
  }

  #deleteAt(index: number): void {
    const s = this.#slots[index];
    try {
      this.#vm.setUserMemoryRegion(s.slot, 0, s.gpa, 0n, 0n);
    } catch (cause) {
      throw new KvmPartitionError(
        "unmap",
        `failed to delete memory slot ${s.slot} at ${rangeText(s.gpa, s.size)}`,
        cause,
      );
    }
    removeAt(this.#slots, index);
    this.#free.push(s.slot);
    if (s.pinned) {
      try {
        munlock(s.hostAddress, s.size);
      } catch (cause) {
        warn(`failed to unpin ${new MemoryRange(s.gpa, s.gpa + s.size)} after unmapping it`, cause);
      }
    }
  }
}
