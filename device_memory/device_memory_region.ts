import type { MemoryRange } from "../layout/memory_range.ts";
import type { Mappable } from "../mapping/mappable.ts";
import type { DeviceMemoryState } from "./_device_memory_state.ts";

/** Options of {@linkcode DeviceMemoryRegion.map}. */
export type DeviceMappingOptions = Parameters<DeviceMemoryRegion["map"]>[5];

let construct: (state: DeviceMemoryState) => DeviceMemoryRegion;

/** Makes a {@linkcode DeviceMemoryRegion} (internal: its constructor is private). */
export function newDeviceMemoryRegion(state: DeviceMemoryState): DeviceMemoryRegion {
  return construct(state);
}

/**
 * The inside of a device memory region: backing objects placed at offsets.
 * Changes show in the guest at once when the region is placed there.
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, MemoryLayout, MemoryRange, SharedMemoryBacking } from "../mod.ts";
 * import assert from "node:assert/strict";
 *
 * using manager = new GuestMemoryBuilder().build(
 *   MemoryLayout.fromGaps(1n << 20n, [new MemoryRange(0x100000n, 0x200000n)]),
 * );
 * using framebuffer = SharedMemoryBacking.create(0x10000n);
 * const { control, region } = manager.deviceMemoryMapper().newRegion(0x10000n, "framebuffer");
 * region.map(0n, framebuffer, 0n, 0x10000n, true);
 * control.mapToGuest(0x100000n, true);
 * framebuffer.write(0n, new Uint8Array([7]));
 * assert.equal(manager.client().guestMemory().readU8(0x100000n), 7);
 * ```
 */
export class DeviceMemoryRegion {
  readonly #state: DeviceMemoryState;

  static {
    construct = (state) => new DeviceMemoryRegion(state);
  }

  private constructor(state: DeviceMemoryState) {
    this.#state = state;
  }

  /** The device region's name. */
  get name(): string {
    return this.#state.name;
  }

  /** The device region's length in bytes. */
  get length(): bigint {
    return this.#state.length;
  }

  /** The current mappings (offsets inside the device region). */
  get mappings(): readonly { range: MemoryRange; fileOffset: bigint; writable: boolean }[] {
    return this.#state.mappings.toArray();
  }

  /**
   * Maps `length` bytes of `backing` from `fileOffset` at `offset`. A range
   * outside the region or overlapping a mapping is a `RegionError`;
   * unaligned values are a `RangeError`. Nothing changes on error.
   *
   * A regular file backing (a memfd included) must be sealed against
   * shrinking (`F_SEAL_SHRINK`, as `SharedMemoryBacking.create` seals):
   * truncated under its mapping it would make accesses die of SIGBUS.
   * Without the seal the mapping is a `RegionError` (`shrinkableBacking`)
   * unless `options.allowShrinkable` is set, by which the caller promises
   * the file keeps its size while it is mapped.
   */
  map(
    offset: bigint,
    backing: Mappable,
    fileOffset: bigint,
    length: bigint,
    writable: boolean,
    options: {
      /**
       * Accept a regular file backing that is not sealed against shrinking
       * (`F_SEAL_SHRINK`): the caller guarantees it keeps its size while
       * mapped (truncated, it makes guest memory accesses die of SIGBUS).
       */
      readonly allowShrinkable?: boolean;
    } = {},
  ): void {
    this.#state.map(
      offset,
      backing,
      fileOffset,
      length,
      writable,
      options.allowShrinkable ?? false,
    );
  }

  /**
   * Removes the mappings inside `[offset, offset + length)`; one only partly
   * inside is a `RegionError` (`partial-removal`) and nothing changes.
   */
  unmap(offset: bigint, length: bigint): void {
    this.#state.unmap(offset, length);
  }
}
