import type { MemoryRange } from "../layout/memory_range.ts";
import { lowerBound } from "../collections/_lower_bound.ts";
import { RegionError } from "./region_error.ts";
import type { MapParams } from "./_map_params.ts";
import type { RegionHandle } from "./_region_handle.ts";

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

// Map params of the visible states (the region manager copies what it keeps).
const READ_WRITE: MapParams = { writable: true, executable: true, prefetch: false };
const READ_ONLY: MapParams = { writable: false, executable: true, prefetch: false };

/** A RAM region under visibility control. */
export interface RamRegionEntry {
  /** The region's range. */
  readonly range: MemoryRange;
  /** The region. */
  readonly handle: RegionHandle;
}

let construct: (regions: ReadonlyArray<RamRegionEntry>) => RamVisibilityControl;

/** Makes a {@linkcode RamVisibilityControl} (internal: its constructor is private). */
export function newRamVisibilityControl(
  regions: ReadonlyArray<RamRegionEntry>,
): RamVisibilityControl {
  return construct(regions);
}

/**
 * Changes what the guest sees of whole RAM regions (the x86 VGA window and
 * PAM pieces with x86 legacy splitting): read-write, read-only or hidden.
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, MemoryLayout, MemoryRange, RamVisibility } from "../mod.ts";
 * import assert from "node:assert/strict";
 *
 * using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
 *   MemoryLayout.fromGaps(2n << 20n, []),
 * );
 * const control = manager.ramVisibilityControl();
 * const bios = new MemoryRange(0xf0000n, 0x100000n);
 * control.setRamVisibility(bios, RamVisibility.ReadOnly);
 * assert.equal(manager.client().guestMemory().isMapped(0xf0000n, 4, true), false);
 * assert.throws(() => control.setRamVisibility(new MemoryRange(0xf0000n, 0xf4000n), RamVisibility.Unmapped), {
 *   name: "RegionError",
 *   message: "0xf0000-0xf4000 is not a controllable RAM range",
 * });
 * ```
 */
export class RamVisibilityControl {
  /**
   * The regions sorted by range (start, then end), one per distinct range
   * (the last one given wins), found by binary search: cheaper than a Map
   * keyed by the formatted range or by the bigint start, both of which cost
   * a string build or a bigint hash per lookup.
   */
  readonly #regions: RamRegionEntry[] = [];

  static {
    construct = (regions) => new RamVisibilityControl(regions);
  }

  private constructor(regions: ReadonlyArray<RamRegionEntry>) {
    for (const region of regions) {
      const index = this.#lowerBound(region.range);
      const at = this.#regions[index];
      if (at !== undefined && at.range.equals(region.range)) this.#regions[index] = region;
      else this.#regions.splice(index, 0, region);
    }
  }

  /**
   * Sets the visibility of the RAM region whose range is exactly `range`;
   * anything else (a sub-range, a union of regions) is an
   * {@linkcode RegionError} `invalidRamRange` and nothing changes.
   */
  setRamVisibility(range: MemoryRange, visibility: RamVisibility): void {
    const handle = this.#find(range);
    if (handle === undefined) throw new RegionError({ kind: "invalidRamRange", range });
    switch (visibility) {
      case RamVisibility.ReadWrite:
        handle.map(READ_WRITE);
        return;
      case RamVisibility.ReadOnly:
        handle.map(READ_ONLY);
        return;
      case RamVisibility.Unmapped:
        handle.unmap();
        return;
      default:
        throw new TypeError(`unknown RAM visibility ${String(visibility)}`);
    }
  }

  #find(range: MemoryRange): RegionHandle | undefined {
    const at = this.#regions[this.#lowerBound(range)];
    return at !== undefined && at.range.equals(range) ? at.handle : undefined;
  }

  /** Index of the first region whose range does not sort before `range`. */
  #lowerBound(range: MemoryRange): number {
    return lowerBound(this.#regions, sortsAtOrAfter, range);
  }
}

const sortsAtOrAfter = (entry: RamRegionEntry, range: MemoryRange): boolean =>
  entry.range.compare(range) >= 0;
