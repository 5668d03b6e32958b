import { warn } from "../diagnostics/warnings.ts";
import { checkMappingBacking, checkShrinkSealed } from "../regions/_backing_check.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import type { Mappable } from "../mapping/mappable.ts";
import { RegionError } from "../regions/region_error.ts";
import type { RegionHandle } from "../regions/_region_handle.ts";
import type { RegionManager } from "../regions/_region_manager.ts";
import { MAPPING_KEYS, type RegionMapping } from "../regions/_region_tree.ts";
import { SortedRangeList } from "../collections/_sorted_range_list.ts";

/** Priority of device memory regions: RAM (255) always wins over them. */
export const DEVICE_PRIORITY = 0;

/**
 * What a device memory region and its control share: the mappings (offsets
 * inside the device region) and, when placed in the guest, the region
 * handle. Internal to the device memory mapper.
 */
export class DeviceMemoryState {
  readonly manager: RegionManager;
  readonly name: string;
  readonly length: bigint;
  /** Mappings relative to the device region, ordered, disjoint. */
  readonly mappings: SortedRangeList<RegionMapping> = new SortedRangeList(MAPPING_KEYS);
  handle: RegionHandle | undefined = undefined;
  writable = false;

  constructor(manager: RegionManager, name: string, length: bigint) {
    this.manager = manager;
    this.name = name;
    this.length = length;
  }

  /** The range `[offset, offset + length)` inside the device region, checked. */
  rangeAt(offset: bigint, length: bigint): MemoryRange {
    const range = MemoryRange.fromLength(offset, length);
    if (range.end > this.length) {
      throw new RegionError({
        kind: "mappingOutsideRegion",
        owner: "device memory region",
        name: this.name,
        range,
        regionSize: this.length,
      });
    }
    return range;
  }

  map(
    offset: bigint,
    backing: Mappable,
    fileOffset: bigint,
    length: bigint,
    writable: boolean,
    allowShrinkable = false,
  ): void {
    const range = this.rangeAt(offset, length);
    if (range.isEmpty()) return;
    const existing = this.mappings.firstOverlapping(range.start, range.end);
    if (existing !== undefined) {
      throw new RegionError({
        kind: "mappingOverlap",
        owner: "device memory region",
        name: this.name,
        range,
        existing: existing.range,
      });
    }
    checkMappingBacking(this.name, range, backing, fileOffset);
    checkShrinkSealed(this.name, range, backing, allowShrinkable);
    this.handle?.addMapping(range, backing, fileOffset, writable);
    this.mappings.insert({ range, backing, fileOffset, writable });
  }

  unmap(offset: bigint, length: bigint): void {
    const range = this.rangeAt(offset, length);
    if (range.isEmpty()) return; // overlaps nothing
    const inside = this.mappings.overlapping(range.start, range.end);
    if (inside.length === 0) return;
    for (const mapping of inside) {
      if (!range.contains(mapping.range)) {
        throw new RegionError({
          kind: "partialRemoval",
          owner: "device memory region",
          name: this.name,
          range,
          mapping: mapping.range,
        });
      }
    }
    this.handle?.removeMappings(range);
    this.mappings.removeWithin(range.start, range.end);
  }

  mapToGuest(gpa: bigint, writable: boolean): void {
    const range = MemoryRange.fromLength(gpa, this.length);
    const params = { writable, executable: true, prefetch: false };
    const old = this.handle;
    if (old !== undefined && old.range.equals(range)) {
      old.map(params);
      this.writable = writable;
      return;
    }
    const oldWritable = this.writable;
    // A refused placement is found before the region leaves its old place.
    old?.checkMove(range);
    this.unmapFromGuest();
    try {
      this.#place(range, writable);
    } catch (error) {
      // The move failed: put the region back as it was (its old place among
      // identical regions included), so nothing changes.
      if (old !== undefined) this.#restore(old, oldWritable);
      throw error;
    }
  }

  unmapFromGuest(): void {
    const handle = this.handle;
    if (handle === undefined) return;
    // Removal fails, changing nothing, when what the region hid cannot be shown.
    handle[Symbol.dispose]();
    this.handle = undefined;
  }

  /** Puts back the removed `handle`, mapped as it was; a failure now is only a warning. */
  #restore(handle: RegionHandle, writable: boolean): void {
    try {
      handle.restore();
      handle.map({ writable, executable: true, prefetch: false });
    } catch (cause) {
      handle[Symbol.dispose]();
      warn(`failed to put device memory region ${this.name} back at ${handle.range}`, cause);
      return;
    }
    this.handle = handle;
    this.writable = writable;
  }

  #place(range: MemoryRange, writable: boolean): void {
    const handle = this.manager.newRegion(this.name, range, DEVICE_PRIORITY, false);
    try {
      for (const m of this.mappings.toArray()) {
        handle.addMapping(m.range, m.backing, m.fileOffset, m.writable);
      }
      handle.map({ writable, executable: true, prefetch: false });
    } catch (error) {
      handle[Symbol.dispose]();
      throw error;
    }
    this.handle = handle;
    this.writable = writable;
  }
}
