import type { MemoryRange } from "../layout/memory_range.ts";
import type { Mappable } from "../mapping/mappable.ts";
import type { MapParams } from "./_map_params.ts";
import type { RegionMapping, RegionNode } from "./_region_tree.ts";

/** What a handle needs from its manager (implemented by the region manager). */
export interface RegionOwner {
  /** Maps the region with `params`. */
  mapRegion(node: RegionNode, params: MapParams): void;
  /** Unmaps the region. */
  unmapRegion(node: RegionNode): void;
  /** Adds a mapping to the region. */
  addRegionMapping(
    node: RegionNode,
    rangeInRegion: MemoryRange,
    backing: Mappable,
    fileOffset: bigint,
    writable: boolean,
  ): void;
  /** Removes the mappings inside `rangeInRegion`. */
  removeRegionMappings(node: RegionNode, rangeInRegion: MemoryRange): void;
  /** Unmaps and deletes the region. */
  removeRegion(node: RegionNode): void;
  /** Puts a removed region back where it was, unmapped. */
  restoreRegion(node: RegionNode): void;
  /** Throws what moving the region to `range` would, changing nothing. */
  checkMoveRegion(node: RegionNode, range: MemoryRange): void;
}

/**
 * One region of the guest physical address map, as given out by
 * {@linkcode RegionManager.newRegion}. Map it to make it a candidate for
 * visibility (the highest-priority mapped region wins at each address), give
 * it backing with {@linkcode addMapping}, and dispose of it to remove it.
 *
 * @example
 * ```ts ignore
 * using rom = manager.newRegion("rom", new MemoryRange(0xf0000n, 0x100000n), 0, false);
 * rom.addMapping(new MemoryRange(0n, 0x10000n), romFd, 0n, false);
 * rom.map({ writable: false, executable: true, prefetch: false });
 * ```
 */
export class RegionHandle implements Disposable {
  #owner: RegionOwner;
  #node: RegionNode;

  /** Made by the region manager only. */
  constructor(owner: RegionOwner, node: RegionNode) {
    this.#owner = owner;
    this.#node = node;
  }

  /** The region's name (shown in errors and inspection). */
  get name(): string {
    return this.#node.name;
  }

  /** The guest physical range. */
  get range(): MemoryRange {
    return this.#node.range;
  }

  /** Priority 0-255; higher wins. */
  get priority(): number {
    return this.#node.priority;
  }

  /** Whether DMA targets mirror this region. */
  get dmaTarget(): boolean {
    return this.#node.dmaTarget;
  }

  /** Whether the region is what the guest currently sees on its range. */
  get isActive(): boolean {
    return this.#node.active;
  }

  /** Whether the region has been removed. */
  get isRemoved(): boolean {
    return this.#node.removed;
  }

  /** The current map params, or `undefined` when unmapped. */
  get mapParams(): MapParams | undefined {
    return this.#node.params;
  }

  /** The region's mappings (ranges relative to the region), ordered by start. */
  get mappings(): readonly RegionMapping[] {
    return this.#node.mappings.toArray();
  }

  /** Maps the region with `params` (no-op when they are the current ones). */
  map(params: MapParams): void {
    this.#owner.mapRegion(this.#node, params);
  }

  /** Unmaps the region; whatever lies under it becomes visible. */
  unmap(): void {
    this.#owner.unmapRegion(this.#node);
  }

  /**
   * Backs `rangeInRegion` (relative to the region start) with `backing` from
   * `fileOffset`. Throws a {@linkcode RegionError} (`mapping-overlap`,
   * `mapping-outside-region`) without changing anything.
   */
  addMapping(
    rangeInRegion: MemoryRange,
    backing: Mappable,
    fileOffset: bigint,
    writable: boolean,
  ): void {
    this.#owner.addRegionMapping(this.#node, rangeInRegion, backing, fileOffset, writable);
  }

  /**
   * Removes every mapping inside `rangeInRegion`; a mapping only partly
   * inside is a {@linkcode RegionError} (`partial-removal`) and nothing changes.
   */
  removeMappings(rangeInRegion: MemoryRange): void {
    this.#owner.removeRegionMappings(this.#node, rangeInRegion);
  }

  /**
   * Puts the region back after it was removed, with its mappings and its
   * old place among identical regions (so "first added wins" still holds),
   * unmapped: for undoing a failed move. No-op when not removed; a
   * {@linkcode RegionError} (`overlap`) when a region added since is in the
   * way.
   */
  restore(): void {
    this.#owner.restoreRegion(this.#node);
  }

  /**
   * Throws the {@linkcode RegionError} that removing this region and adding
   * it again at `range` would (an overlap with another region, a range
   * outside the address space), and changes nothing either way: a move can
   * then be refused before the region is taken down.
   */
  checkMove(range: MemoryRange): void {
    this.#owner.checkMoveRegion(this.#node, range);
  }

  /** Removes the region (unmapping it first). Idempotent. */
  [Symbol.dispose](): void {
    if (this.#node.removed) return;
    this.#owner.removeRegion(this.#node);
  }
}
