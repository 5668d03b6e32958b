/**
 * The hugetlb checks of the builder: the hugepage size itself, then the
 * alignment of guest RAM to it.
 *
 * @module
 */

import type { MemoryRange } from "../layout/memory_range.ts";
import { MemorySize } from "../layout/memory_size.ts";
import { MemoryBuildError } from "./memory_build_error.ts";

/** The hugepage size used when `hugepages()` is given none: 2 MiB. */
export const DEFAULT_HUGEPAGE_SIZE: bigint = 2n << 20n;

/**
 * The largest size the host can hold as an object size: 2^63 - 1 (`off_t`
 * and `ssize_t` on 64-bit Linux). JavaScript bigints have no such limit, so
 * the builder's "ram size is too large" check compares with this.
 */
export const MAX_HOST_SIZE: bigint = (1n << 63n) - 1n;

/**
 * The largest value of the host's pointer-sized integer: 2^64 - 1 (`usize`
 * on a 64-bit host). A hugepage size must fit it; the reference converts the
 * `u64` size with `try_into`, which a 64-bit host always accepts, so larger
 * pages fail later, on alignment or in the kernel.
 */
export const MAX_POINTER_SIZE: bigint = (1n << 64n) - 1n;

function isPowerOfTwo(value: bigint): boolean {
  return value > 0n && (value & (value - 1n)) === 0n;
}

/**
 * Checks a hugepage size: a power of two at least `pageSize` (else
 * `invalidHugepageSize`), and no larger than {@linkcode MAX_POINTER_SIZE}
 * (else `hugepageSizeTooLarge`). Returns the size.
 *
 * @example
 * ```ts
 * import { validateHugepageSize } from "./_hugepage_validation.ts";
 * console.log(validateHugepageSize(2n << 20n, 4096n)); // 2097152n
 * ```
 */
export function validateHugepageSize(size: bigint, pageSize: bigint): bigint {
  if (!isPowerOfTwo(size) || size < pageSize) {
    throw new MemoryBuildError({ kind: "invalidHugepageSize", size: new MemorySize(size) });
  }
  if (size > MAX_POINTER_SIZE) {
    throw new MemoryBuildError({ kind: "hugepageSizeTooLarge", size: new MemorySize(size) });
  }
  return size;
}

/**
 * Checks that the total RAM size, then each RAM range's start and length,
 * are multiples of `hugepageSize` (`hugepageRamSizeUnaligned`,
 * `hugepageRamRangeUnaligned`).
 *
 * @example
 * ```ts
 * import { validateHugepageRamAlignment } from "./_hugepage_validation.ts";
 * import { MemoryRange } from "../layout/memory_range.ts";
 * validateHugepageRamAlignment(4n << 20n, [new MemoryRange(0n, 4n << 20n)], 2n << 20n);
 * ```
 */
export function validateHugepageRamAlignment(
  ramSize: bigint,
  ranges: readonly MemoryRange[],
  hugepageSize: bigint,
): void {
  if (ramSize % hugepageSize !== 0n) {
    throw new MemoryBuildError({
      kind: "hugepageRamSizeUnaligned",
      ramSize: new MemorySize(ramSize),
      hugepageSize: new MemorySize(hugepageSize),
    });
  }
  for (const range of ranges) {
    if (range.start % hugepageSize !== 0n || range.len % hugepageSize !== 0n) {
      throw new MemoryBuildError({
        kind: "hugepageRamRangeUnaligned",
        range,
        rangeSize: new MemorySize(range.len),
        hugepageSize: new MemorySize(hugepageSize),
      });
    }
  }
}
