import type { MemoryRange } from "../layout/memory_range.ts";
import type { MemorySize } from "../layout/memory_size.ts";

/** The case of a {@linkcode MemoryBuildError}, with the values its message shows. */
export type MemoryBuildErrorDetail = MemoryBuildError["detail"];

/** Which rule or step failed. */
export type MemoryBuildErrorKind = MemoryBuildErrorDetail["kind"];

function describe(detail: MemoryBuildErrorDetail): string {
  switch (detail.kind) {
    case "ramTooLarge":
      return `ram size ${detail.size} is too large`;
    case "allocationFailed":
      return "failed to allocate memory";
    case "hugepageAllocationFailed":
      return `failed to reserve ${detail.pageCount} hugetlb pages of ${detail.hugepageSize} each ` +
        `(${detail.size} total); increase the hugetlb pool or reduce guest memory size`;
    case "vaMapper":
      return "failed to create VA mapper";
    case "aliasMapWontFit":
      return "not enough guest address space available for the vtl0 alias map";
    case "invalidRamForX86":
      return "x86 support requires RAM to start at 0 and contain at least 1MB";
    case "privateMemoryWithLegacy":
      return "private memory is incompatible with x86 legacy support";
    case "privateMemoryWithExistingBacking":
      return "private memory is incompatible with existing memory backing";
    case "privateRamAlloc":
      return `failed to allocate private RAM range ${detail.range}`;
    case "thpWithoutPrivateMemory":
      return "transparent huge pages requires private memory mode";
    case "thpUnsupportedPlatform":
      return "transparent huge pages is only supported on Linux";
    case "hugepageSizeTooLarge":
      return `hugepage size ${detail.size} is too large`;
    case "hugepagesUnsupportedPlatform":
      return "hugepages are only supported on Linux";
    case "hugepagesWithPrivateMemory":
      return "hugepages require shared memory mode";
    case "hugepagesWithExistingBacking":
      return "hugepages are incompatible with existing memory backing";
    case "hugepagesWithLegacy":
      return "hugepages are incompatible with x86 legacy RAM splitting";
    case "invalidHugepageSize":
      return `hugepage size ${detail.size} must be a power of two and at least the host page size`;
    case "hugepageRamSizeUnaligned":
      return `RAM size ${detail.ramSize} is not aligned to ${detail.hugepageSize} hugepages; ` +
        "choose a memory size that is a multiple of the hugepage size";
    case "hugepageRamRangeUnaligned":
      return `RAM range ${detail.range} (${detail.rangeSize}) is not aligned to ` +
        `${detail.hugepageSize} hugepages; range start and size must both be multiples of the ` +
        "hugepage size";
    case "existingBackingTooSmall":
      return `existing memory backing holds ${detail.size}, less than the ${detail.ramSize} of ` +
        "guest RAM";
  }
}

/**
 * Building a guest memory manager failed. `kind` (and `detail`, which holds
 * the values shown in the message) says which rule or step failed; where an
 * OS call failed, its {@linkcode SyscallError} is the `cause`.
 *
 * @example
 * ```ts
 * import { MemoryBuildError } from "./memory_build_error.ts";
 * import { MemorySize } from "../layout/memory_size.ts";
 * import assert from "node:assert/strict";
 * const err = new MemoryBuildError({
 *   kind: "hugepageAllocationFailed",
 *   size: new MemorySize(1n << 30n),
 *   hugepageSize: new MemorySize(2n << 20n),
 *   pageCount: 512n,
 * });
 * assert.equal(
 *   err.message,
 *   "failed to reserve 512 hugetlb pages of 2 MB each (1 GB total); increase the hugetlb pool or reduce guest memory size",
 * );
 * // failed to reserve 512 hugetlb pages of 2 MB each (1 GB total); increase the hugetlb pool or reduce guest memory size
 * ```
 */
export class MemoryBuildError extends Error {
  /** Which rule or step failed. */
  readonly kind: MemoryBuildError["detail"]["kind"];
  /**
   * The case with the values its message shows. One case per failure of
   * the reference design, plus `existingBackingTooSmall` (a check the
   * reference lacks).
   */
  readonly detail:
    /** `ram size {size} is too large` */
    | { readonly kind: "ramTooLarge"; readonly size: MemorySize }
    /** `failed to allocate memory` (cause: the OS error) */
    | { readonly kind: "allocationFailed" }
    /** `failed to reserve {pageCount} hugetlb pages of {hugepageSize} each ({size} total); ...` */
    | {
      readonly kind: "hugepageAllocationFailed";
      readonly size: MemorySize;
      readonly hugepageSize: MemorySize;
      readonly pageCount: bigint;
    }
    /** `failed to create VA mapper` (cause: the OS error) */
    | { readonly kind: "vaMapper" }
    /** `not enough guest address space available for the vtl0 alias map` */
    | { readonly kind: "aliasMapWontFit" }
    /** `x86 support requires RAM to start at 0 and contain at least 1MB` */
    | { readonly kind: "invalidRamForX86" }
    /** `private memory is incompatible with x86 legacy support` */
    | { readonly kind: "privateMemoryWithLegacy" }
    /** `private memory is incompatible with existing memory backing` */
    | { readonly kind: "privateMemoryWithExistingBacking" }
    /** `failed to allocate private RAM range {range}` (cause: the OS error) */
    | { readonly kind: "privateRamAlloc"; readonly range: MemoryRange }
    /** `transparent huge pages requires private memory mode` */
    | { readonly kind: "thpWithoutPrivateMemory" }
    /** `transparent huge pages is only supported on Linux` */
    | { readonly kind: "thpUnsupportedPlatform" }
    /** `hugepage size {size} is too large` */
    | { readonly kind: "hugepageSizeTooLarge"; readonly size: MemorySize }
    /** `hugepages are only supported on Linux` */
    | { readonly kind: "hugepagesUnsupportedPlatform" }
    /** `hugepages require shared memory mode` */
    | { readonly kind: "hugepagesWithPrivateMemory" }
    /** `hugepages are incompatible with existing memory backing` */
    | { readonly kind: "hugepagesWithExistingBacking" }
    /** `hugepages are incompatible with x86 legacy RAM splitting` */
    | { readonly kind: "hugepagesWithLegacy" }
    /** `hugepage size {size} must be a power of two and at least the host page size` */
    | { readonly kind: "invalidHugepageSize"; readonly size: MemorySize }
    /** `RAM size {ramSize} is not aligned to {hugepageSize} hugepages; ...` */
    | {
      readonly kind: "hugepageRamSizeUnaligned";
      readonly ramSize: MemorySize;
      readonly hugepageSize: MemorySize;
    }
    /** `RAM range {range} ({rangeSize}) is not aligned to {hugepageSize} hugepages; ...` */
    | {
      readonly kind: "hugepageRamRangeUnaligned";
      readonly range: MemoryRange;
      readonly rangeSize: MemorySize;
      readonly hugepageSize: MemorySize;
    }
    /** `existing memory backing holds {size}, less than the {ramSize} of guest RAM` */
    | {
      readonly kind: "existingBackingTooSmall";
      readonly size: MemorySize;
      readonly ramSize: MemorySize;
    };

  /**
   * Creates the error for `detail`.
   *
   * @param detail The case and its values.
   * @param options `cause`: the OS error, where one failed.
   */
  constructor(detail: MemoryBuildError["detail"], options?: ErrorOptions) {
    super(describe(detail), options);
    this.name = "MemoryBuildError";
    this.kind = detail.kind;
    this.detail = detail;
  }
}
