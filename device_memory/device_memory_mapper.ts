import { MemoryRange } from "../layout/memory_range.ts";
import { DeviceMemoryControl } from "./device_memory_control.ts";
import { DeviceMemoryRegion } from "./device_memory_region.ts";
import { DeviceMemoryState } from "./_device_memory_state.ts";
import type { RegionManager } from "../regions/_region_manager.ts";

/** The two sides of a device memory region. */
export interface DeviceMemory {
  /** Places the region in the guest. */
  readonly control: DeviceMemoryControl;
  /** Maps backing objects inside the region. */
  readonly region: DeviceMemoryRegion;
}

/**
 * Creates device memory regions (framebuffers, ROMs, BARs backed by host
 * memory): what `GuestMemoryManager.deviceMemoryMapper()` returns.
 *
 * @example
 * ```ts ignore
 * const { control, region } = manager.deviceMemoryMapper().newRegion(0x20000n, "vga");
 * region.map(0n, vram, 0n, 0x20000n, true);
 * control.mapToGuest(0xa0000n, true);
 * ```
 */
export class DeviceMemoryMapper {
  readonly #regions: RegionManager;

  /** A mapper adding regions to `regions`. */
  constructor(regions: RegionManager) {
    this.#regions = regions;
  }

  /**
   * A new device region of `length` bytes (page aligned, else `RangeError`)
   * named `name`, not yet in the guest.
   */
  newRegion(length: bigint, name: string): DeviceMemory {
    MemoryRange.fromLength(0n, length); // validates alignment
    const state = new DeviceMemoryState(this.#regions, name, length);
    return { control: new DeviceMemoryControl(state), region: new DeviceMemoryRegion(state) };
  }
}
