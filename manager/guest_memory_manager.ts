import { warn } from "../diagnostics/warnings.ts";
import { DisposedError } from "../diagnostics/disposed_error.ts";
import type { OwnedFd } from "../ffi/_owned_fd.ts";
import { hex } from "../layout/_hex.ts";
import type { GuestMemoryClient } from "../guest_memory/guest_memory_client.ts";
import type { MemoryRange } from "../layout/memory_range.ts";
import type { VaMapper } from "../mapping/_va_mapper.ts";
import type { Partition } from "../partition/partition.ts";
import { PartitionMapper } from "../partition/_partition_mapper.ts";
import { PartitionMapperError } from "../partition/_partition_mapper_error.ts";
import type { DeviceMemoryMapper } from "../device_memory/device_memory_mapper.ts";
import type { DmaMapperClient } from "../regions/dma_mapper_client.ts";
import type { RamVisibilityControl } from "../regions/ram_visibility_control.ts";
import type { RegionHandle } from "../regions/_region_handle.ts";
import type { RegionManager } from "../regions/_region_manager.ts";
import { PartitionAttachError } from "./partition_attach_error.ts";
import { PrefetchError } from "./prefetch_error.ts";
import type { PartitionAttachment } from "./partition_attachment.ts";
import { adoptBacking, type SharedMemoryBacking } from "./shared_memory_backing.ts";
import { Vtl } from "./vtl.ts";
import { newDeviceMemoryMapper } from "../device_memory/device_memory_mapper.ts";
import { newDmaMapperClient } from "../regions/dma_mapper_client.ts";
import { newRamVisibilityControl } from "../regions/ram_visibility_control.ts";
import { newGuestMemoryClient } from "../guest_memory/guest_memory_client.ts";
import { newPartitionAttachment } from "./partition_attachment.ts";
import {
  type DirtyTracker,
  newDirtyTracker,
  trackerPartitionAttached,
  trackerPartitionDetached,
} from "../snapshot/dirty_tracker.ts";

/** One RAM region of a manager: its guest range and the handle that controls it. */
export interface RamRegion {
  /** The guest physical range. */
  readonly range: MemoryRange;
  /** The region in the region manager. */
  readonly handle: RegionHandle;
}

/**
 * What {@linkcode GuestMemoryManager} is made of; the builder assembles it
 * and hands over ownership of every resource in it.
 */
export interface GuestMemoryManagerParts {
  /** The shared RAM object (owned), or undefined in private memory mode. */
  readonly backing: OwnedFd | undefined;
  /** The page size of a hugetlb RAM object, else undefined. */
  readonly hugepageSize: bigint | undefined;
  /** The host address reservation (owned). */
  readonly va: VaMapper;
  /** The region manager over `va` (owned). */
  readonly regionManager: RegionManager;
  /** The RAM regions, in guest address order. */
  readonly ramRegions: readonly RamRegion[];
  /** The VTL0 alias map offset, if any. */
  readonly vtl0AliasMapOffset: bigint | undefined;
  /** Whether partition mappings are pinned. */
  readonly pinMappings: boolean;
}

let construct: (parts: GuestMemoryManagerParts) => GuestMemoryManager;
let partsOf: (manager: GuestMemoryManager) => GuestMemoryManagerParts;

/** Makes a manager owning `parts` (for the builder). */
export function newGuestMemoryManager(parts: GuestMemoryManagerParts): GuestMemoryManager {
  return construct(parts);
}

/**
 * The parts of `manager`, for the library's own tests and tools: handing
 * them out publicly would let a caller break the manager's invariants.
 */
export function managerInternals(manager: GuestMemoryManager): GuestMemoryManagerParts {
  return partsOf(manager);
}

/**
 * Guest memory of one virtual machine: the RAM, the host address
 * reservation holding it, and the region manager that decides what the
 * guest sees at each address. Made by `GuestMemoryBuilder.build`.
 *
 * Disposing of it detaches every partition (unmapping everything from
 * them), removes all regions, releases the reservation and closes the RAM
 * object (a {@linkcode SharedMemoryBacking} taken from it stays valid).
 * Disposing twice does nothing.
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, MemoryLayout, Vtl } from "../mod.ts";
 * import { RecordingPartition } from "../testing.ts";
 * import assert from "node:assert/strict";
 *
 * using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(16n << 20n, []));
 * const memory = manager.client().guestMemory();
 * memory.writeU64(0x2000n, 42n);
 * const partition = new RecordingPartition();
 * using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
 * assert.deepEqual(partition.mappings().map((m) => m.size), [16n << 20n]);
 * assert.equal(memory.readU64(0x2000n), 42n);
 * ```
 */
export class GuestMemoryManager implements Disposable {
  #backing: OwnedFd | undefined;
  #hugepageSize: bigint | undefined;
  #va: VaMapper;
  #regionManager: RegionManager;
  #ramRegions: readonly RamRegion[];
  #aliasOffset: bigint | undefined;
  #pin: boolean;
  #client: GuestMemoryClient | undefined;
  #attachments = new Set<PartitionAttachment>();
  /** The attached partitions, each once (made again after an attach or detach). */
  #partitionList: readonly Partition[] | undefined;
  #tracker: DirtyTracker | undefined;
  #disposed = false;

  static {
    construct = (parts) => new GuestMemoryManager(parts);
    partsOf = (manager) => ({
      backing: manager.#backing,
      hugepageSize: manager.#hugepageSize,
      va: manager.#va,
      regionManager: manager.#regionManager,
      ramRegions: manager.#ramRegions,
      vtl0AliasMapOffset: manager.#aliasOffset,
      pinMappings: manager.#pin,
    });
  }

  private constructor(parts: GuestMemoryManagerParts) {
    this.#backing = parts.backing;
    this.#hugepageSize = parts.hugepageSize;
    this.#va = parts.va;
    this.#regionManager = parts.regionManager;
    this.#ramRegions = Object.freeze([...parts.ramRegions]);
    this.#aliasOffset = parts.vtl0AliasMapOffset;
    this.#pin = parts.pinMappings;
  }

  /** Whether the manager has been disposed. */
  get isDisposed(): boolean {
    return this.#disposed;
  }

  /**
   * The guest memory client. Always the same object: there is one host
   * address reservation per manager, however often this is called.
   */
  client(): GuestMemoryClient {
    this.#checkLive();
    this.#client ??= newGuestMemoryClient(this.#va);
    return this.#client;
  }

  /** A mapper for device memory (priority-0 regions that RAM overrides). */
  deviceMemoryMapper(): DeviceMemoryMapper {
    this.#checkLive();
    return newDeviceMemoryMapper(this.#regionManager);
  }

  /** A client for registering DMA targets (VFIO, iommufd). */
  dmaMapperClient(): DmaMapperClient {
    this.#checkLive();
    return newDmaMapperClient(this.#regionManager);
  }

  /** Control of RAM region visibility (`Unmapped`, `ReadOnly`, `ReadWrite`). */
  ramVisibilityControl(): RamVisibilityControl {
    this.#checkLive();
    return newRamVisibilityControl(this.#ramRegions);
  }

  /**
   * The RAM object, for `GuestMemoryBuilder.existingBacking`: a new manager
   * built with it sees the same memory. The returned backing owns its own
   * descriptor (dispose of it when done). `undefined` in private memory mode.
   */
  sharedMemoryBacking(): SharedMemoryBacking | undefined {
    this.#checkLive();
    if (this.#backing === undefined) return undefined;
    return adoptBacking(this.#backing.duplicate(), this.#hugepageSize);
  }

  /**
   * The dirty page tracker of this guest memory (see the `./snapshot`
   * entry point); the same object on every call. Partitions attached later
   * log too while it tracks.
   *
   * @returns The tracker (off until `start()`).
   * @throws {DisposedError} once the manager is disposed.
   * @example
   * ```ts
   * import { GuestMemoryBuilder, MemoryLayout } from "../mod.ts";
   * import assert from "node:assert/strict";
   *
   * using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(1n << 20n, []));
   * const tracker = manager.dirtyTracker();
   * tracker.start();
   * manager.client().guestMemory().writeU8(0x2001, 1);
   * assert.deepEqual(tracker.dirtyPages(), [0x2000n]);
   * ```
   */
  dirtyTracker(): DirtyTracker {
    this.#checkLive();
    this.#tracker ??= newDirtyTracker({
      va: this.#va,
      partitions: () =>
        this.#partitionList ??= [...new Set([...this.#attachments].map((a) => a.partition))],
      aliasOffset: this.#aliasOffset,
      isDisposed: () => this.#disposed,
    });
    return this.#tracker;
  }

  /**
   * Maps every active region into `partition` and keeps it up to date until
   * the returned attachment is disposed. For VTL2 with a VTL0 alias map
   * offset, the same memory is first attached shifted up by that offset.
   * With pinned mappings each mapped range is pinned too.
   *
   * Throws {@linkcode PartitionAttachError} (cause: the
   * `PartitionMapperError`) and leaves nothing mapped in the partition.
   */
  attachPartition(vtl: Vtl, partition: Partition): PartitionAttachment {
    this.#checkLive();
    const mappers: PartitionMapper[] = [];
    try {
      if (vtl === Vtl.Vtl2 && this.#aliasOffset !== undefined) {
        const alias = new PartitionMapper(partition, this.#va, this.#aliasOffset, this.#pin);
        this.#regionManager.addPartition(alias);
        mappers.push(alias);
      }
      const direct = new PartitionMapper(partition, this.#va, 0n, this.#pin);
      this.#regionManager.addPartition(direct);
      mappers.push(direct);
    } catch (error) {
      this.#removeMappers(mappers);
      if (error instanceof PartitionMapperError) throw new PartitionAttachError(error);
      throw error;
    }
    const attachment = newPartitionAttachment(partition, vtl, () => {
      // Detaching fails, changing nothing, when the partition cannot unmap
      // a region; while the manager goes away it detaches anyway.
      this.#removeMappers(mappers, !this.#disposed);
      this.#attachments.delete(attachment);
      this.#partitionList = undefined;
      const stillAttached = [...this.#attachments].some((a) => a.partition === partition);
      if (this.#tracker !== undefined && !stillAttached) {
        trackerPartitionDetached(this.#tracker, partition);
      }
    });
    const first = ![...this.#attachments].some((a) => a.partition === partition);
    this.#attachments.add(attachment);
    this.#partitionList = undefined;
    if (this.#tracker !== undefined && first) trackerPartitionAttached(this.#tracker, partition);
    return attachment;
  }

  /**
   * Faults in the host pages of all visible RAM, on several threads at once
   * (`MADV_POPULATE_WRITE` on Deno's blocking thread pool; by default one
   * thread per core). The builder's `prefetchRam` does the same work on
   * this thread during `build`; this is the parallel, asynchronous form,
   * for shared, hugetlb and private RAM alike. RAM that a region change
   * takes away while this runs is skipped.
   *
   * A failure is reported once every range is done (nothing still runs on
   * the pool then); pages populated so far stay, the regions and mappings
   * are untouched, and calling again populates the rest. A signal that
   * interrupts populating (`EINTR`) is no failure: the range is populated
   * again.
   *
   * @param options `threads`: how many ranges are populated at once.
   * @returns A promise settled when every page is in.
   * @throws {DisposedError} once the manager is disposed.
   * @throws {PrefetchError} `populate` for the first range the kernel could
   *   not populate (ENOMEM, EFAULT), the `madvise` SyscallError as `cause`.
   * @example
   * ```ts
   * import { GuestMemoryBuilder, MemoryLayout } from "../mod.ts";
   * import assert from "node:assert/strict";
   *
   * using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(64n << 20n, []));
   * await manager.prefetch({ threads: 2 });
   * assert.equal(manager.client().guestMemory().readU8(0x100000), 0);
   * ```
   */
  async prefetch(options: { readonly threads?: number } = {}): Promise<void> {
    this.#checkLive();
    const threads = options.threads ?? navigator.hardwareConcurrency;
    const failure = (range: MemoryRange, write: boolean, cause: unknown) =>
      new PrefetchError({
        kind: "populate",
        range,
        advice: write ? "MADV_POPULATE_WRITE" : "MADV_POPULATE_READ",
      }, { cause });
    const results = await Promise.allSettled(
      this.#ramRegions.map(({ range }) => this.#va.populate(range, threads, failure)),
    );
    const failed = results.find((r) => r.status === "rejected");
    if (failed !== undefined) throw failed.reason;
  }

  /**
   * Starts a transaction of region changes (QEMU's
   * `memory_region_transaction_begin`/`commit`): until the returned handle
   * is disposed, RAM visibility and device memory changes update what the
   * guest is meant to see, and the host reservation, partitions and DMA
   * targets get only the net result at the end, region by region (a piece
   * flipped and flipped back costs nothing). Transactions nest; the
   * outermost one applies. What reaches the host at once inside one
   * (mapping device memory that the guest sees, attaching or detaching a
   * partition or DMA target) applies what is pending first. Applying is
   * all or nothing: when a change fails, the ones applied before it are
   * undone and every change since the host last caught up is taken back
   * (regions added in the transaction are removed again), then the error
   * is thrown from the disposal (or from the operation that applied). An
   * operation that throws inside a transaction changes nothing itself and
   * does not end the transaction: what succeeded is applied at the end.
   *
   * @returns The transaction; dispose of it (`using`) to apply it.
   * @throws {DisposedError} once the manager is disposed.
   * @example
   * ```ts
   * import { GuestMemoryBuilder, MemoryLayout, MemoryRange, RamVisibility } from "../mod.ts";
   * import assert from "node:assert/strict";
   *
   * using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
   *   MemoryLayout.fromGaps(2n << 20n, []),
   * );
   * const control = manager.ramVisibilityControl();
   * const memory = manager.client().guestMemory();
   * {
   *   using _ = manager.transaction();
   *   for (let start = 0xc0000n; start < 0xf0000n; start += 0x4000n) {
   *     control.setRamVisibility(new MemoryRange(start, start + 0x4000n), RamVisibility.ReadOnly);
   *   }
   *   assert.equal(memory.isMapped(0xc0000n, 4, true), true); // not applied yet
   * }
   * assert.equal(memory.isMapped(0xc0000n, 4, true), false);
   * ```
   */
  transaction(): Disposable {
    this.#checkLive();
    return this.#regionManager.beginTransaction();
  }

  /**
   * A plain JSON tree: the regions (from the region manager), the live
   * ranges of the host reservation keyed by guest range, and the options
   * that shape partition attachment.
   */
  inspect(): Record<string, unknown> {
    this.#checkLive();
    const vaMappings: Record<string, unknown> = {};
    for (const entry of this.#va.entries()) {
      vaMappings[String(entry.range)] = entry.kind === "shared"
        ? { kind: entry.kind, writable: entry.writable, file_offset: hex(entry.fileOffset) }
        : { kind: entry.kind, writable: entry.writable };
    }
    const tree: Record<string, unknown> = {
      regions: this.#regionManager.inspect(),
      va_mappings: vaMappings,
      pin_mappings: this.#pin,
    };
    if (this.#aliasOffset !== undefined) tree.vtl0_alias_map_offset = hex(this.#aliasOffset);
    return tree;
  }

  /**
   * Detaches every partition, removes all regions, releases the host
   * reservation and closes the RAM object. Idempotent.
   */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    // Workers fail fast from here on, so tearing the regions down does not
    // wait for their accesses.
    this.#va.retire();
    using stack = new DisposableStack();
    // Disposed in reverse: partitions are detached first, the RAM fd closed last.
    const backing = this.#backing;
    this.#backing = undefined;
    if (backing !== undefined) stack.use(backing);
    stack.use(this.#va);
    stack.use(this.#regionManager);
    for (const attachment of this.#attachments) stack.use(attachment);
  }

  #removeMappers(mappers: readonly PartitionMapper[], strict = true): void {
    const removed: PartitionMapper[] = [];
    try {
      for (const mapper of [...mappers].reverse()) {
        this.#regionManager.removePartition(mapper, strict);
        removed.push(mapper);
      }
    } catch (error) {
      // All or nothing: the mappers already detached come back.
      for (const mapper of removed.reverse()) {
        try {
          this.#regionManager.addPartition(mapper);
        } catch (cause) {
          warn("failed to attach a partition again after a failed detach", cause);
        }
      }
      throw error;
    }
  }

  #checkLive(): void {
    if (this.#disposed) throw new DisposedError({ object: "guest memory manager" });
  }
}
