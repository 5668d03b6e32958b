import { warn } from "../diagnostics/warnings.ts";
import type { MemoryRange } from "../layout/memory_range.ts";
import type { VaMapper } from "../mapping/_va_mapper.ts";
import type { MapParams } from "../regions/_map_params.ts";
import type { Partition } from "./partition.ts";
import { PartitionMapperError } from "./_partition_mapper_error.ts";

/**
 * Connects one partition to the region manager: maps whole regions at
 * `gpa + offset` (offset non-zero for the VTL0 alias map), pointing at the
 * region's host addresses in the reservation, pinning and prefetching as
 * configured.
 *
 * @example
 * ```ts ignore
 * const mapper = new PartitionMapper(partition, va, 0n, false);
 * mapper.mapRegion(range, { writable: true, executable: true, prefetch: false });
 * ```
 */
export class PartitionMapper {
  /** The partition mapped into. */
  readonly partition: Partition;
  /** The reservation whose host addresses back the guest ranges. */
  readonly va: VaMapper;
  /** Added to every guest address (the VTL0 alias map offset, or 0). */
  readonly offset: bigint;
  /** Pin every mapped range. */
  readonly pin: boolean;

  /** Creates the mapper. */
  constructor(partition: Partition, va: VaMapper, offset: bigint, pin: boolean) {
    this.partition = partition;
    this.va = va;
    this.offset = offset;
    this.pin = pin;
  }

  /**
   * Maps `range` (guest physical, before the offset) with `params`. Throws
   * {@linkcode PartitionMapperError} (`map`, or `pin` after unmapping the
   * range again); a prefetch failure only warns.
   */
  /** Ranges to prefetch once the open batch is committed. */
  #prefetches: [bigint, bigint][] | undefined;

  /**
   * Starts a batch in the partition (see {@linkcode Partition.beginBatch});
   * not with pinning (pages are locked per slot as it is made).
   *
   * @returns Whether one started; commit or abort it then.
   */
  beginBatch(): boolean {
    if (this.pin || this.partition.beginBatch?.() !== true) return false;
    this.#prefetches = [];
    return true;
  }

  /**
   * Applies the open batch, then prefetches what was mapped with prefetch.
   *
   * @throws {PartitionMapperError} `map` with the partition's error as cause
   *   (the partition is as before the batch).
   */
  commitBatch(): void {
    const prefetches = this.#prefetches ?? [];
    this.#prefetches = undefined;
    try {
      this.partition.commitBatch!();
    } catch (cause) {
      throw new PartitionMapperError("map", cause);
    }
    for (const [gpa, len] of prefetches) {
      try {
        this.partition.prefetchRange!(gpa, len);
      } catch (cause) {
        warn(`failed to prefetch ${gpa}+${len} into partition`, cause);
      }
    }
  }

  /**
   * Undoes the partition's last committed batch exactly, where it can.
   *
   * @returns Whether it did.
   * @throws {PartitionMapperError} `map` with the partition's error as cause.
   */
  revertBatch(): boolean {
    if (this.pin) return false;
    try {
      return this.partition.revertBatch?.() ?? false;
    } catch (cause) {
      throw new PartitionMapperError("map", cause);
    }
  }

  /** Forgets the open batch. */
  abortBatch(): void {
    this.#prefetches = undefined;
    this.partition.abortBatch!();
  }

  mapRegion(range: MemoryRange, params: MapParams): void {
    const gpa = range.start + this.offset;
    try {
      this.partition.mapRange(
        this.va.hostAddress(range.start),
        range.len,
        gpa,
        params.writable,
        params.executable,
      );
    } catch (cause) {
      throw new PartitionMapperError("map", cause);
    }
    if (this.pin) {
      try {
        this.partition.pinRange?.(gpa, range.len);
      } catch (cause) {
        try {
          this.partition.unmapRange(gpa, range.len);
        } catch (unmapCause) {
          warn(`failed to unmap ${range} from partition after failing to pin it`, unmapCause);
        }
        throw new PartitionMapperError("pin", cause);
      }
    }
    if (params.prefetch && this.partition.prefetchRange !== undefined) {
      if (this.#prefetches !== undefined) {
        this.#prefetches.push([gpa, range.len]);
        return;
      }
      try {
        this.partition.prefetchRange(gpa, range.len);
      } catch (cause) {
        warn(`failed to prefetch ${range} into partition`, cause);
      }
    }
  }

  /** Unmaps `range` (guest physical, before the offset). */
  unmapRegion(range: MemoryRange): void {
    this.partition.unmapRange(range.start + this.offset, range.len);
  }
}
