import { ChunkedSortedList, type ListCursor } from "../collections/_chunked_sorted_list.ts";
import type { Partition } from "../partition/partition.ts";

const hex = (value: bigint): string => `0x${value.toString(16)}`;

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

/** Search predicate with the address as key (module-level: no closure per search). */
const endsAfter = (mapping: RecordedMapping, gpa: bigint): boolean => mapping.end > gpa;

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
 * const partition = new RecordingPartition();
 * partition.mapRange(0x7f0000000000n, 0x1000n, 0x0n, true, true);
 * partition.unmapRange(0x0n, 0x100000n);
 * console.log(partition.mappings().length, partition.events.length); // 0 2
 * ```
 */
export class RecordingPartition implements Partition {
  /** Every call received, oldest first (empty when not recording). */
  readonly events: PartitionEvent[] = [];
  readonly #record: boolean;
  /** Current mappings, ordered by gpa, disjoint. */
  readonly #mappings = new ChunkedSortedList<RecordedMapping>();

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
    const cursor = this.#firstEndingAfter(gpa);
    const next = this.#mappings.at(cursor);
    if (next !== undefined && next.gpa < end) {
      throw new RangeError(
        `range ${hex(gpa)}-${hex(end)} overlaps the mapped range at ${hex(next.gpa)}`,
      );
    }
    const mapping: RecordedMapping = { gpa, size, end, hostAddress, writable, executable };
    this.#mappings.insertAt(cursor, mapping);
    if (this.#record) this.events.push({ kind: "map", ...mapping });
  }

  /** Forgets every mapping inside `[gpa, gpa + size)`. */
  unmapRange(gpa: bigint, size: bigint): void {
    const end = gpa + size;
    const list = this.#mappings;
    const first = this.#firstEndingAfter(gpa);
    let count = 0;
    for (let c = first;; c = list.next(c)) {
      const mapping = list.at(c);
      if (mapping === undefined || mapping.gpa >= end) break;
      if (mapping.gpa < gpa || mapping.end > end) {
        throw new RangeError(
          `mapped range at ${hex(mapping.gpa)} is only partly inside ${hex(gpa)}-${hex(end)}`,
        );
      }
      count++;
    }
    for (let i = 0; i < count; i++) list.removeAt(this.#firstEndingAfter(gpa));
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
    const mapping = this.#mappings.at(this.#firstEndingAfter(gpa));
    return mapping !== undefined && mapping.gpa <= gpa ? mapping : undefined;
  }

  /** Empties the event log (the memory map is kept). */
  clearEvents(): void {
    this.events.length = 0;
  }

  /** Position of the first mapping ending above `gpa`. */
  #firstEndingAfter(gpa: bigint): ListCursor {
    return this.#mappings.firstWhere(endsAfter, gpa);
  }
}
