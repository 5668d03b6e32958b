import type { MemoryRange } from "../layout/memory_range.ts";
import type { Mappable } from "../mapping/mappable.ts";

/**
 * Something that performs DMA into guest memory (a VFIO container, an
 * iommufd) and must mirror what the guest sees in its IO page tables. It
 * hears about every sub-mapping of every active DMA-capable region, and
 * never about inactive regions. Errors it throws are reported as warnings.
 *
 * @example
 * ```ts
 * import type { DmaTarget } from "./dma_target.ts";
 * const log: string[] = [];
 * const target: DmaTarget = {
 *   mapDma: (range) => void log.push(`map ${range}`),
 *   unmapDma: (range) => void log.push(`unmap ${range}`),
 * };
 * ```
 */
export interface DmaTarget {
  /**
   * Guest physical `range` now holds `backing` from `fileOffset`, at host
   * address `hostAddress` when the target asked for host addresses.
   */
  mapDma(
    range: MemoryRange,
    hostAddress: bigint | undefined,
    backing: Mappable,
    fileOffset: bigint,
    writable: boolean,
  ): void;
  /** Everything inside guest physical `range` is gone. */
  unmapDma(range: MemoryRange): void;
}
