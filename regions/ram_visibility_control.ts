import type { MemoryRange } from "../layout/memory_range.ts";
import { InvalidRamRegionError } from "./invalid_ram_region_error.ts";
import type { RegionHandle } from "./region_handle.ts";

/** What the guest sees of a RAM region. */
export const RamVisibility = {
  /** Hidden: a lower-priority region (device memory) or nothing (MMIO exits) shows through. */
  Unmapped: "unmapped",
  /** Readable and executable; writes exit as MMIO even where device memory lies below. */
  ReadOnly: "read-only",
  /** Ordinary RAM. */
  ReadWrite: "read-write",
} as const;

/** One of the {@linkcode RamVisibility} values. */
export type RamVisibility = typeof RamVisibility[keyof typeof RamVisibility];

/** A RAM region under visibility control. */
export interface RamRegionEntry {
  /** The region's range. */
  readonly range: MemoryRange;
  /** The region. */
  readonly handle: RegionHandle;
}

/**
 * Changes what the guest sees of whole RAM regions (the x86 VGA window and
 * PAM pieces with x86 legacy splitting): read-write, read-only or hidden.
 *
 * @example
 * ```ts ignore
 * const control = manager.ramVisibilityControl();
 * control.setRamVisibility(new MemoryRange(0xf0000n, 0x100000n), RamVisibility.ReadOnly);
 * ```
 */
export class RamVisibilityControl {
  readonly #regions: Map<string, RegionHandle>;

  /** Controls `regions` (each range at most once). */
  constructor(regions: ReadonlyArray<RamRegionEntry>) {
    this.#regions = new Map(regions.map((r) => [`${r.range}`, r.handle]));
  }

  /**
   * Sets the visibility of the RAM region whose range is exactly `range`;
   * anything else (a sub-range, a union of regions) is an
   * {@linkcode InvalidRamRegionError} and nothing changes.
   */
  setRamVisibility(range: MemoryRange, visibility: RamVisibility): void {
    const handle = this.#regions.get(`${range}`);
    if (handle === undefined) throw new InvalidRamRegionError(range);
    switch (visibility) {
      case RamVisibility.ReadWrite:
      case RamVisibility.ReadOnly:
        handle.map({
          writable: visibility === RamVisibility.ReadWrite,
          executable: true,
          prefetch: false,
        });
        return;
      case RamVisibility.Unmapped:
        handle.unmap();
        return;
      default:
        throw new TypeError(`unknown RAM visibility ${String(visibility)}`);
    }
  }
}
