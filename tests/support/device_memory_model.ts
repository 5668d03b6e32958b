/**
 * A thin adapter that mirrors one device memory region (the pair of
 * `DeviceMemoryControl` and `DeviceMemoryRegion` from
 * `manager.deviceMemoryMapper().newRegion`) onto the naive
 * {@linkcode RegionModel}: the device's mappings are kept here, and while
 * the device is placed in the guest they are a priority-0 model region.
 *
 * Refusals throw {@linkcode ModelError} with the texts the real device
 * memory code uses, leaving everything unchanged.
 *
 * @module
 */
import { MemoryRange } from "../../layout/memory_range.ts";
import {
  type ModelBacking,
  ModelError,
  type ModelMapping,
  type RegionModel,
} from "./region_model.ts";

const hex = (value: bigint): string => `0x${value.toString(16)}`;

/** Device memory regions have the lowest priority. */
export const MODEL_DEVICE_PRIORITY = 0;

/** The model of one device memory region. */
export class DeviceMemoryModel {
  readonly model: RegionModel;
  readonly name: string;
  readonly length: bigint;
  /** The device's mappings (ranges relative to the device), ordered. */
  mappings: ModelMapping[] = [];
  /** The model region while placed in the guest. */
  regionId: number | undefined;
  writable = false;

  /** A device of `length` bytes, not placed. */
  constructor(model: RegionModel, name: string, length: bigint) {
    this.model = model;
    this.name = name;
    this.length = length;
  }

  /** Where the device is placed in the guest, if it is. */
  get guestRange(): MemoryRange | undefined {
    return this.regionId === undefined ? undefined : this.model.region(this.regionId).range;
  }

  /** Mirrors `DeviceMemoryControl.mapToGuest`. */
  mapToGuest(gpa: bigint, writable: boolean): void {
    const range = MemoryRange.fromLength(gpa, this.length);
    const params = { writable, executable: true, prefetch: false };
    const old = this.guestRange;
    if (this.regionId !== undefined && old !== undefined && old.equals(range)) {
      this.model.map(this.regionId, params);
      this.writable = writable;
      return;
    }
    const oldWritable = this.writable;
    const oldRegion = this.regionId === undefined ? undefined : this.model.region(this.regionId);
    if (oldRegion !== undefined) this.model.checkMove(oldRegion.id, range);
    this.unmapFromGuest();
    try {
      this.#place(range, writable);
    } catch (error) {
      // A failed move puts the old region back in its old place.
      if (oldRegion !== undefined) {
        this.model.restore(oldRegion);
        this.model.map(oldRegion.id, { writable: oldWritable, executable: true, prefetch: false });
        this.regionId = oldRegion.id;
        this.writable = oldWritable;
      }
      throw error;
    }
  }

  /** Mirrors `DeviceMemoryControl.unmapFromGuest`. */
  unmapFromGuest(): void {
    if (this.regionId === undefined) return;
    this.model.remove(this.regionId);
    this.regionId = undefined;
  }

  /** Mirrors `DeviceMemoryRegion.map`. */
  map(
    offset: bigint,
    backing: ModelBacking,
    fileOffset: bigint,
    length: bigint,
    writable: boolean,
  ): void {
    const range = this.#rangeAt(offset, length);
    if (range.isEmpty()) return;
    const clash = this.mappings.find((m) => m.range.overlaps(range));
    if (clash !== undefined) {
      throw new ModelError(
        `mapping ${range} overlaps mapping ${clash.range} in device memory region ${this.name}`,
      );
    }
    if (this.regionId !== undefined) {
      this.model.addMapping(this.regionId, range, backing, fileOffset, writable);
    }
    this.mappings = [...this.mappings, { range, backing, fileOffset, writable }]
      .sort((a, b) => a.range.compare(b.range));
  }

  /** Mirrors `DeviceMemoryRegion.unmap`. */
  unmap(offset: bigint, length: bigint): void {
    const range = this.#rangeAt(offset, length);
    if (range.isEmpty()) return;
    const touched = this.mappings.filter((m) => m.range.overlaps(range));
    const partial = touched.find((m) => !range.contains(m.range));
    if (partial !== undefined) {
      throw new ModelError(
        `mapping ${partial.range} of device memory region ${this.name} is only partly inside ${range}`,
      );
    }
    if (touched.length === 0) return;
    if (this.regionId !== undefined) this.model.removeMappings(this.regionId, range);
    this.mappings = this.mappings.filter((m) => !touched.includes(m));
  }

  #rangeAt(offset: bigint, length: bigint): MemoryRange {
    const range = MemoryRange.fromLength(offset, length);
    if (range.end > this.length) {
      throw new ModelError(
        `range ${range} is outside device memory region ${this.name} (${hex(this.length)} bytes)`,
      );
    }
    return range;
  }

  #place(range: MemoryRange, writable: boolean): void {
    const id = this.model.newRegion(this.name, range, MODEL_DEVICE_PRIORITY, false);
    for (const m of this.mappings) {
      this.model.addMapping(id, m.range, m.backing, m.fileOffset, m.writable);
    }
    this.model.map(id, { writable, executable: true, prefetch: false });
    this.regionId = id;
    this.writable = writable;
  }
}
