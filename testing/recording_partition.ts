import {
  type RangeKeys,
  RangeListError,
  SortedRangeList,
} from "../collections/_sorted_range_list.ts";
import { hex } from "../layout/_hex.ts";
import type { Partition } from "../partition/partition.ts";

/** One range mapped into a {@linkcode RecordingPartition}. */
export interface RecordedMapping {
  /** Guest physical start. */
  readonly gpa: bigint;
  /** Length in bytes. */
  readonly size: bigint;
  /** `gpa + size`. */
  readonly end: bigint;
  /** Host address of `gpa`. */
  readonly hostAddress: bigint;
  /** Guest may write. */
  readonly writable: boolean;
  /** Guest may execute. */
  readonly executable: boolean;
}

/** One call a {@linkcode RecordingPartition} received. */
export type PartitionEvent =
  | ({ readonly kind: "map" } & RecordedMapping)
  | { readonly kind: "unmap" | "prefetch" | "pin"; readonly gpa: bigint; readonly size: bigint };

/** Options of a {@linkcode RecordingPartition}. */
export interface RecordingPartitionOptions {
  /** Keep the event log (default true; turn off for long runs and benchmarks). */
  readonly recordEvents?: boolean;
}

/** Mappings keyed by their guest range. */
const MAPPING_KEYS: RangeKeys<RecordedMapping> = { start: (m) => m.gpa, end: (m) => m.end };

/**
 * A partition that only remembers what it is told: the current memory map
 * (what a KVM VM would have in its memory slots) and a log of calls. Useful
 * on hosts without KVM, to see what the guest would see, and in tests.
 *
 * Like a KVM partition, it refuses a `mapRange` overlapping a mapped range
 * and an `unmapRange` that cuts through one (`RangeError`).
 *
 * @example
 * ```ts
 * import { RecordingPartition } from "./recording_partition.ts";
 * import assert from "node:assert/strict";
 * const partition = new RecordingPartition();
 * partition.mapRange(0x7f0000000000n, 0x1000n, 0x0n, true, true);
 * partition.unmapRange(0x0n, 0x100000n);
 * assert.equal(partition.mappings().length, 0);
 * assert.equal(partition.events.length, 2);
 * ```
 */
export class RecordingPartition implements Partition {
  /** Every call received, oldest first (empty when not recording). */
  readonly events: PartitionEvent[] = [];
  readonly #record: boolean;
  /** Current mappings, ordered by gpa, disjoint. */
  readonly #mappings = new SortedRangeList<RecordedMapping>(MAPPING_KEYS);

  /** An empty partition. */
  constructor(options: RecordingPartitionOptions = {}) {
    this.#record = options.recordEvents ?? true;
  }

  /** Records a mapping of `[gpa, gpa + size)`. */
  mapRange(
    hostAddress: bigint,
    size: bigint,
    gpa: bigint,
    writable: boolean,
    executable: boolean,
  ): void {
    if (size === 0n) return;
    const end = gpa + size;
    const mapping: RecordedMapping = { gpa, size, end, hostAddress, writable, executable };
    try {
      this.#mappings.insert(mapping);
    } catch (error) {
      if (!(error instanceof RangeListError)) throw error;
      const next = error.existing as RecordedMapping;
      throw new RangeError(
        `range ${hex(gpa)}-${hex(end)} overlaps the mapped range at ${hex(next.gpa)}`,
      );
    }
    if (this.#record) this.events.push({ kind: "map", ...mapping });
  }

  /** Forgets every mapping inside `[gpa, gpa + size)`. */
  unmapRange(gpa: bigint, size: bigint): void {
    const end = gpa + size;
    try {
      this.#mappings.removeWithin(gpa, end);
    } catch (error) {
      if (!(error instanceof RangeListError)) throw error;
      const mapping = error.existing as RecordedMapping;
      throw new RangeError(
        `mapped range at ${hex(mapping.gpa)} is only partly inside ${hex(gpa)}-${hex(end)}`,
      );
    }
    if (this.#record) this.events.push({ kind: "unmap", gpa, size });
  }

  /** Records a prefetch request. */
  prefetchRange(gpa: bigint, size: bigint): void {
    if (this.#record) this.events.push({ kind: "prefetch", gpa, size });
  }

  /** Records a pin request. */
  pinRange(gpa: bigint, size: bigint): void {
    if (this.#record) this.events.push({ kind: "pin", gpa, size });
  }

  /** The current memory map, ordered by gpa. */
  mappings(): readonly RecordedMapping[] {
    return this.#mappings.toArray();
  }

  /** The mapping containing `gpa`, if any. */
  mappingAt(gpa: bigint): RecordedMapping | undefined {
    return this.#mappings.find(gpa);
  }

  /** Empties the event log (the memory map is kept). */
  clearEvents(): void {
    this.events.length = 0;
  }
}
