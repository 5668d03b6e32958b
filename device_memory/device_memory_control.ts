import type { MemoryRange } from "../layout/memory_range.ts";
import type { DeviceMemoryState } from "./_device_memory_state.ts";

let construct: (state: DeviceMemoryState) => DeviceMemoryControl;

/** Makes a {@linkcode DeviceMemoryControl} (internal: its constructor is private). */
export function newDeviceMemoryControl(state: DeviceMemoryState): DeviceMemoryControl {
  return construct(state);
}

/**
 * Places a device memory region in the guest physical address space, as a
 * priority-0, non-DMA region named after the device region (RAM always wins
 * over it). It is mapped executable, never prefetched.
 *
 * @example
 * ```ts ignore
 * const { control } = mapper.newRegion(0x20000n, "vga");
 * control.mapToGuest(0xa0000n, true);
 * control.unmapFromGuest();
 * ```
 */
export class DeviceMemoryControl implements Disposable {
  readonly #state: DeviceMemoryState;

  static {
    construct = (state) => new DeviceMemoryControl(state);
  }

  private constructor(state: DeviceMemoryState) {
    this.#state = state;
  }

  /** Where the region is placed, or `undefined`. */
  get guestRange(): MemoryRange | undefined {
    return this.#state.handle?.range;
  }

  /** Whether the region is what the guest currently sees at its range. */
  get isActive(): boolean {
    return this.#state.handle?.isActive ?? false;
  }

  /**
   * Places the region at `gpa` (moving it when placed elsewhere; changing
   * only its writability when already there) with all its mappings, and
   * maps it. Throws a `RegionError` (kind `overlap`) when it does
   * not nest with existing regions; the region then stays where it was.
   */
  mapToGuest(gpa: bigint, writable: boolean): void {
    this.#state.mapToGuest(gpa, writable);
  }

  /** Takes the region out of the guest (no-op when not placed). */
  unmapFromGuest(): void {
    this.#state.unmapFromGuest();
  }

  /** Same as {@linkcode unmapFromGuest}. */
  [Symbol.dispose](): void {
    this.#state.unmapFromGuest();
  }
}
