import type { MemoryRange } from "../layout/memory_range.ts";
import { hex } from "../layout/_hex.ts";

/**
 * A region operation was refused; nothing changed. `kind` says which rule
 * (`detail` holds the values its message shows):
 *
 * - `overlap`: `memory region {newName} overlaps with existing region
 *   {existingName}` (the reference's text), then both ranges and
 *   priorities and the nesting rule that was broken (`rule`): a
 *   lower-priority region must lie inside the region it overlaps
 *   (`lowerInside`), an equal-priority one must have the same range
 *   (`equalSame`), a higher-priority one must contain it
 *   (`higherContains`). The existing region named is the first offender in
 *   the order regions were added.
 * - `invalidRamRange`: `{range} is not a controllable RAM range`
 * - `invalidPriority`, `outsideAddressSpace`: a new region's priority or range
 * - `mappingOutsideRegion`, `mappingOverlap`, `mappingUnalignedOffset`,
 *   `mappingPastBackingEnd`, `partialRemoval`: a mapping of a region or
 *   device memory region that the reference design asserts on
 * - `shrinkableBacking`: a device memory mapping whose backing file is not
 *   sealed against shrinking (`F_SEAL_SHRINK`), refused unless the caller
 *   opts in with `allowShrinkable`
 * - `partitionMap`, `partitionUnmap`: `failed to map memory region {name} at
 *   {range} into a partition` / `failed to unmap memory region {name} at
 *   {range} from a partition`, the partition's error as `cause`; the
 *   operation was undone (partitions, DMA targets and the host mappings are
 *   as before)
 * - `removed`: the region was removed
 * - `reentrant`: a partition or DMA target called back into the region
 *   manager from inside an operation
 *
 * @example
 * ```ts
 * import { RegionError } from "./region_error.ts";
 * import { MemoryRange } from "../layout/memory_range.ts";
 * import assert from "node:assert/strict";
 * const err = new RegionError({
 *   kind: "overlap",
 *   newName: "rom",
 *   newRange: new MemoryRange(0xe0000n, 0x100000n),
 *   newPriority: 0,
 *   existingName: "ram",
 *   existingRange: new MemoryRange(0xe0000n, 0xe4000n),
 *   existingPriority: 255,
 *   rule: "lowerInside",
 * });
 * assert.equal(
 *   err.message,
 *   "memory region rom overlaps with existing region ram: rom is 0xe0000-0x100000 at " +
 *     "priority 0, ram is 0xe0000-0xe4000 at priority 255; a region of lower priority " +
 *     "must lie inside the region it overlaps",
 * );
 * ```
 */
export class RegionError extends Error {
  /** Which rule was broken. */
  readonly kind: RegionError["detail"]["kind"];
  /** The case, with the values its message shows. */
  readonly detail:
    | {
      readonly kind: "overlap";
      readonly newName: string;
      readonly newRange: MemoryRange;
      readonly newPriority: number;
      readonly existingName: string;
      readonly existingRange: MemoryRange;
      readonly existingPriority: number;
      /** The nesting rule the new region broke, decided by the two priorities. */
      readonly rule: "lowerInside" | "equalSame" | "higherContains";
    }
    | { readonly kind: "invalidRamRange"; readonly range: MemoryRange }
    | { readonly kind: "invalidPriority"; readonly name: string; readonly priority: number }
    | {
      readonly kind: "outsideAddressSpace";
      readonly name: string;
      readonly range: MemoryRange;
      readonly addressSpaceSize: bigint;
    }
    | {
      readonly kind: "mappingOutsideRegion";
      readonly owner: "memory region" | "device memory region";
      readonly name: string;
      readonly range: MemoryRange;
      readonly regionSize: bigint;
    }
    | {
      readonly kind: "mappingOverlap";
      readonly owner: "memory region" | "device memory region";
      readonly name: string;
      readonly range: MemoryRange;
      readonly existing: MemoryRange;
    }
    | {
      readonly kind: "partialRemoval";
      readonly owner: "memory region" | "device memory region";
      readonly name: string;
      readonly range: MemoryRange;
      readonly mapping: MemoryRange;
    }
    | {
      readonly kind: "mappingUnalignedOffset";
      readonly name: string;
      readonly range: MemoryRange;
      readonly fileOffset: bigint;
    }
    | {
      readonly kind: "mappingPastBackingEnd";
      readonly name: string;
      readonly range: MemoryRange;
      readonly needed: bigint;
      readonly fileSize: bigint;
    }
    | {
      readonly kind: "shrinkableBacking";
      readonly name: string;
      readonly range: MemoryRange;
    }
    | {
      readonly kind: "partitionMap" | "partitionUnmap";
      readonly name: string;
      readonly range: MemoryRange;
    }
    | { readonly kind: "removed"; readonly name: string }
    | { readonly kind: "reentrant" };

  /**
   * Creates the error for `detail`.
   *
   * @param detail The case and its values.
   * @param options The cause (the partition's error, for `partitionMap` and `partitionUnmap`).
   */
  constructor(detail: RegionError["detail"], options?: ErrorOptions) {
    super(describe(detail), options);
    this.name = "RegionError";
    this.kind = detail.kind;
    this.detail = detail;
  }
}

/**
 * The nesting rule of overlapping regions that a new region broke:
 * `lowerInside` (lower priority than the existing region, so it must lie
 * inside it), `equalSame` (equal priority: same range), `higherContains`
 * (higher priority: it must contain the existing region).
 */
export type OverlapRule = "lowerInside" | "equalSame" | "higherContains";

/** The rule that applies to a new region of `newPriority` over one of `existingPriority`. */
export function overlapRule(newPriority: number, existingPriority: number): OverlapRule {
  if (newPriority < existingPriority) return "lowerInside";
  return newPriority === existingPriority ? "equalSame" : "higherContains";
}

const RULE_TEXT: Record<OverlapRule, string> = {
  lowerInside: "a region of lower priority must lie inside the region it overlaps",
  equalSame: "regions of equal priority that overlap must have the same range",
  higherContains: "a region of higher priority must contain the region it overlaps",
};

function describe(d: RegionError["detail"]): string {
  switch (d.kind) {
    case "overlap":
      return `memory region ${d.newName} overlaps with existing region ${d.existingName}: ${d.newName} is ${d.newRange} at priority ${d.newPriority}, ${d.existingName} is ${d.existingRange} at priority ${d.existingPriority}; ${
        RULE_TEXT[d.rule]
      }`;
    case "invalidRamRange":
      return `${d.range} is not a controllable RAM range`;
    case "invalidPriority":
      return `memory region ${d.name} priority ${d.priority} is not an integer in 0-255`;
    case "outsideAddressSpace":
      return `memory region ${d.name} at ${d.range} is outside the ${
        hex(d.addressSpaceSize)
      }-byte guest address space`;
    case "mappingOutsideRegion":
      return `${
        d.owner === "device memory region" ? "range" : "mapping"
      } ${d.range} is outside ${d.owner} ${d.name} (${hex(d.regionSize)} bytes)`;
    case "mappingOverlap":
      return `mapping ${d.range} overlaps mapping ${d.existing} in ${d.owner} ${d.name}`;
    case "partialRemoval":
      return `mapping ${d.mapping} of ${d.owner} ${d.name} is only partly inside ${d.range}`;
    case "mappingUnalignedOffset":
      return `mapping ${d.range} of memory region ${d.name} has file offset ${
        hex(d.fileOffset)
      }, which is not 4 KiB aligned`;
    case "mappingPastBackingEnd":
      return `mapping ${d.range} of memory region ${d.name} needs ${
        hex(d.needed)
      } bytes of its backing, which holds ${hex(d.fileSize)}`;
    case "shrinkableBacking":
      return `mapping ${d.range} of device memory region ${d.name} is backed by a file that is not sealed against shrinking, so its owner could truncate it and crash the process with SIGBUS: seal it with F_SEAL_SHRINK (SharedMemoryBacking.create does) or pass { allowShrinkable: true } to map`;
    case "partitionMap":
      return `failed to map memory region ${d.name} at ${d.range} into a partition`;
    case "partitionUnmap":
      return `failed to unmap memory region ${d.name} at ${d.range} from a partition`;
    case "removed":
      return `memory region ${d.name} has been removed`;
    case "reentrant":
      return "region manager operations cannot nest: a partition or DMA target called back into the region manager";
  }
}
