import { Fcntl } from "../ffi/_constants.ts";
import { fileSeals, regularFileSize } from "../ffi/_file_stat.ts";
import { type MemoryRange, PAGE_SIZE } from "../layout/memory_range.ts";
import type { Mappable } from "../mapping/mappable.ts";
import { RegionError } from "./region_error.ts";

/**
 * Checks that `backing` can back `rangeInRegion` of region `regionName` from
 * `fileOffset`: the offset is 4 KiB aligned (mmap needs it) and, for a
 * regular file or memfd, the file holds the whole range — a mapping past the
 * end of its file would kill the process with SIGBUS on first touch.
 * Throws a {@linkcode RegionError} (`mapping-unaligned-offset`,
 * `mapping-past-backing-end`).
 */
export function checkMappingBacking(
  regionName: string,
  rangeInRegion: MemoryRange,
  backing: Mappable,
  fileOffset: bigint,
): void {
  if (fileOffset < 0n || (fileOffset & (PAGE_SIZE - 1n)) !== 0n) {
    throw new RegionError({
      kind: "mappingUnalignedOffset",
      name: regionName,
      range: rangeInRegion,
      fileOffset,
    });
  }
  const fileSize = regularFileSize(backing.fd);
  if (fileSize !== undefined && fileOffset + rangeInRegion.len > fileSize) {
    throw new RegionError({
      kind: "mappingPastBackingEnd",
      name: regionName,
      range: rangeInRegion,
      needed: fileOffset + rangeInRegion.len,
      fileSize,
    });
  }
}

/**
 * Checks that the backing of device memory mapping `range` (offsets in
 * device region `regionName`) cannot shrink under its mapping.
 *
 * A page of a shared file mapping that lies past the file's end raises
 * SIGBUS on access, which would kill the VMM: not a `GuestMemoryError`, not
 * a guest fault, the process. Device memory backings come from the caller
 * and stay theirs, so the library cannot stop them from being truncated;
 * it can only insist that the kernel does (the alternatives cost more:
 * mapping a private copy breaks sharing with the device, and catching
 * SIGBUS is not possible from JavaScript). The rule:
 *
 * - a regular file (a memfd, a tmpfs, hugetlbfs or disk file) must carry
 *   `F_SEAL_SHRINK` (`SharedMemoryBacking.create` seals its memfd so);
 *   without it, or on a file system that has no seals (an ordinary disk
 *   file: any writer can truncate it), the mapping is refused with a
 *   {@linkcode RegionError} `shrinkableBacking`, unless `allowShrinkable`
 *   says the caller guarantees the file keeps its size;
 * - anything else (a character device such as a VFIO region or
 *   `/dev/zero`) has no size to lose and is accepted.
 */
export function checkShrinkSealed(
  regionName: string,
  range: MemoryRange,
  backing: Mappable,
  allowShrinkable: boolean,
): void {
  if (allowShrinkable || regularFileSize(backing.fd) === undefined) return;
  const seals = fileSeals(backing.fd);
  if (seals !== undefined && (seals & Fcntl.F_SEAL_SHRINK) !== 0) return;
  throw new RegionError({ kind: "shrinkableBacking", name: regionName, range });
}
