import { MemoryRange } from "../layout/memory_range.ts";
import type { DeviceMemoryControl } from "./device_memory_control.ts";
import type { DeviceMemoryRegion } from "./device_memory_region.ts";
import { DeviceMemoryState } from "./_device_memory_state.ts";
import type { RegionManager } from "../regions/_region_manager.ts";
import { newDeviceMemoryControl } from "./device_memory_control.ts";
import { newDeviceMemoryRegion } from "./device_memory_region.ts";

/** The two sides of a device memory region. */
export type DeviceMemory = ReturnType<DeviceMemoryMapper["newRegion"]>;

let construct: (regions: RegionManager) => DeviceMemoryMapper;

/** Makes a {@linkcode DeviceMemoryMapper} (internal: its constructor is private). */
export function newDeviceMemoryMapper(regions: RegionManager): DeviceMemoryMapper {
  return construct(regions);
}

/**
 * Creates device memory regions (framebuffers, ROMs, BARs backed by host
 * memory): what `GuestMemoryManager.deviceMemoryMapper()` returns.
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, MemoryLayout, MemoryRange, RamVisibility, SharedMemoryBacking } from "../mod.ts";
 * import assert from "node:assert/strict";
 *
 * using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
 *   MemoryLayout.fromGaps(2n << 20n, []),
 * );
 * using vram = SharedMemoryBacking.create(0x20000n, { contents: new Uint8Array([0x56]) });
 * const { control, region } = manager.deviceMemoryMapper().newRegion(0x20000n, "vga");
 * region.map(0n, vram, 0n, 0x20000n, true);
 * control.mapToGuest(0xa0000n, true);
 * const memory = manager.client().guestMemory();
 * assert.equal(memory.readU8(0xa0000n), 0); // RAM wins over device memory
 * manager.ramVisibilityControl().setRamVisibility(
 *   new MemoryRange(0xa0000n, 0xc0000n),
 *   RamVisibility.Unmapped,
 * );
 * assert.equal(memory.readU8(0xa0000n), 0x56); // the VGA window shows the framebuffer
 * ```
 */
export class DeviceMemoryMapper {
  readonly #regions: RegionManager;

  static {
    construct = (regions) => new DeviceMemoryMapper(regions);
  }

  private constructor(regions: RegionManager) {
    this.#regions = regions;
  }

  /**
   * A new device region of `length` bytes (page aligned, else `RangeError`)
   * named `name`, not yet in the guest.
   */
  newRegion(
    length: bigint,
    name: string,
  ): { readonly control: DeviceMemoryControl; readonly region: DeviceMemoryRegion } {
    MemoryRange.fromLength(0n, length); // validates alignment
    const state = new DeviceMemoryState(this.#regions, name, length);
    return { control: newDeviceMemoryControl(state), region: newDeviceMemoryRegion(state) };
  }
}
