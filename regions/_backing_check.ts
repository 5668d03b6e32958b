import { regularFileSize } from "../ffi/_file_stat.ts";
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
