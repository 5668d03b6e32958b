import type { DmaTarget } from "./dma_target.ts";
import type { DmaTargetHandle, RegionManager } from "./_region_manager.ts";

/**
 * Registers DMA targets (VFIO, iommufd) with a region manager; what
 * `GuestMemoryManager.dmaMapperClient()` returns.
 *
 * @example
 * ```ts ignore
 * using registration = manager.dmaMapperClient().addDmaTarget(vfioContainer, true);
 * ```
 */
export class DmaMapperClient {
  readonly #regions: RegionManager;

  /** A client for `regions`. */
  constructor(regions: RegionManager) {
    this.#regions = regions;
  }

  /**
   * Registers `target`: every active sub-mapping of DMA-capable regions is
   * replayed to it now, and it follows every change until the returned
   * handle is disposed of (which unmaps everything from it). With
   * `needsHostAddress`, `mapDma` also gets the host address of each range.
   */
  addDmaTarget(target: DmaTarget, needsHostAddress: boolean): DmaTargetHandle {
    return this.#regions.addDmaTarget(target, needsHostAddress);
  }
}
