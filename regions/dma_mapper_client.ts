import type { DmaTarget } from "./dma_target.ts";
import type { RegionManager } from "./_region_manager.ts";

let construct: (regions: RegionManager) => DmaMapperClient;

/** Makes a {@linkcode DmaMapperClient} (internal: its constructor is private). */
export function newDmaMapperClient(regions: RegionManager): DmaMapperClient {
  return construct(regions);
}

/**
 * Registers DMA targets (VFIO, iommufd) with a region manager; what
 * `GuestMemoryManager.dmaMapperClient()` returns.
 *
 * @example
 * ```ts
 * import { type DmaTarget, GuestMemoryBuilder, MemoryLayout, type MemoryRange } from "../mod.ts";
 * import assert from "node:assert/strict";
 *
 * using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(1n << 20n, []));
 * const seen: string[] = [];
 * const iommu: DmaTarget = {
 *   mapDma: (range: MemoryRange) => void seen.push(`map ${range}`),
 *   unmapDma: (range: MemoryRange) => void seen.push(`unmap ${range}`),
 * };
 * {
 *   using _registration = manager.dmaMapperClient().addDmaTarget(iommu, false);
 * }
 * assert.deepEqual(seen, ["map 0x0-0x100000", "unmap 0x0-0x100000"]);
 * ```
 */
export class DmaMapperClient {
  readonly #regions: RegionManager;

  static {
    construct = (regions) => new DmaMapperClient(regions);
  }

  private constructor(regions: RegionManager) {
    this.#regions = regions;
  }

  /**
   * Registers `target`: every active sub-mapping of DMA-capable regions is
   * replayed to it now, and it follows every change until the returned
   * handle is disposed of (which unmaps everything from it). With
   * `needsHostAddress`, `mapDma` also gets the host address of each range.
   */
  addDmaTarget(
    target: DmaTarget,
    needsHostAddress: boolean,
  ): Disposable & { readonly target: DmaTarget } {
    return this.#regions.addDmaTarget(target, needsHostAddress);
  }
}
