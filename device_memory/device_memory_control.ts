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
 * ```ts
 * import { GuestMemoryBuilder, MemoryLayout, MemoryRange } from "../mod.ts";
 * import assert from "node:assert/strict";
 *
 * using manager = new GuestMemoryBuilder().build(
 *   MemoryLayout.fromGaps(1n << 20n, [new MemoryRange(0x100000n, 0x200000n)]),
 * );
 * const { control } = manager.deviceMemoryMapper().newRegion(0x20000n, "bar");
 * control.mapToGuest(0x100000n, true);
 * assert.equal(`${control.guestRange}`, "0x100000-0x120000");
 * control.mapToGuest(0x140000n, true); // moved
 * assert.equal(`${control.guestRange}`, "0x140000-0x160000");
 * control.unmapFromGuest();
 * assert.equal(control.guestRange, undefined);
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
