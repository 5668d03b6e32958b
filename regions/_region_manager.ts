import { RangeListError } from "../collections/_sorted_range_list.ts";
import { DisposedError } from "../diagnostics/disposed_error.ts";
import { warn } from "../diagnostics/warnings.ts";
import { hex } from "../layout/_hex.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import type { Mappable } from "../mapping/mappable.ts";
import type { VaMapper } from "../mapping/_va_mapper.ts";
import type { PartitionMapper } from "../partition/_partition_mapper.ts";
import type { MapParams } from "./_map_params.ts";
import { checkMappingBacking } from "./_backing_check.ts";
import type { DmaTarget } from "./dma_target.ts";
import { overlapRule, RegionError } from "./region_error.ts";
import { RegionHandle, type RegionOwner } from "./_region_handle.ts";
import { admits, type RegionMapping, RegionNode, RegionTree } from "./_region_tree.ts";

/** A row describing one region, for tables and tests. */
export interface RegionInfo {
  /** The region's name. */
  readonly name: string;
  /** Its guest physical range. */
  readonly range: MemoryRange;
  /** Priority 0-255. */
  readonly priority: number;
  /** Whether DMA targets mirror it. */
  readonly dmaTarget: boolean;
  /** Whether it is what the guest sees on its range. */
  readonly active: boolean;
  /** Current map params, `undefined` when unmapped. */
  readonly mapParams: MapParams | undefined;
  /** Its mappings, ranges relative to the region start. */
  readonly mappings: readonly RegionMapping[];
}

/** A registered DMA target; dispose of it to unregister (everything active is unmapped). */
export interface DmaTargetHandle extends Disposable {
  /** The target. */
  readonly target: DmaTarget;
}

interface DmaEntry {
  readonly target: DmaTarget;
  readonly needsHostAddress: boolean;
}

function sameParams(a: MapParams | undefined, b: MapParams): boolean {
  return a !== undefined && a.writable === b.writable && a.executable === b.executable &&
    a.prefetch === b.prefetch;
}

/**
 * The priority map of guest physical memory. Regions (RAM at priority 255,
 * device memory at 0, anything in between) are added with a range and a
 * priority and must nest (see {@linkcode RegionError} kind `overlap`); at each
 * address the guest sees the mapped region with the highest priority (the
 * earlier added between identical ones). The manager keeps the host VA
 * reservation, every attached partition and every DMA target in step with
 * that choice.
 *
 * Map, unmap and remove cost O(depth of nesting + log of siblings) plus the
 * work for regions that actually change state, whatever the number of regions.
 *
 * @example
 * ```ts ignore
 * using va = VaMapper.reserve(1n << 32n);
 * using manager = new RegionManager(va);
 * const ram = manager.newRegion("ram", new MemoryRange(0n, 1n << 30n), 255, true);
 * ram.addMapping(new MemoryRange(0n, 1n << 30n), memfd, 0n, true);
 * ram.map({ writable: true, executable: true, prefetch: false });
 * manager.addPartition(new PartitionMapper(new RecordingPartition(), va, 0n, false));
 * ```
 */
export class RegionManager implements Disposable {
  readonly #va: VaMapper;
  readonly #tree = new RegionTree();
  /**
   * Every region in insertion order, removed ones included until compaction
   * (a Map or Set is avoided on purpose: V8's ordered hash tables rehash on
   * nearly every delete-then-add once large, ~25 µs at 10,000 entries).
   */
  #order: RegionNode[] = [];
  #removedInOrder = 0;
  #regionCount = 0;
  #partitions: PartitionMapper[] = [];
  #dmaTargets: DmaEntry[] = [];
  #nextId = 0;
  #disposed = false;
  /** Set while an operation runs, so a callback cannot start another one. */
  #busy = false;
  /** What handles call; kept off the public surface. */
  readonly #owner: RegionOwner = {
    // Map and unmap are the hot path (RAM visibility flips): they take the
    // busy flag inline rather than through #exclusive, which would allocate
    // a closure per call.
    mapRegion: (node, params) => {
      this.#enter();
      try {
        this.#mapRegion(node, params);
      } finally {
        this.#busy = false;
      }
    },
    unmapRegion: (node) => {
      this.#enter();
      try {
        this.#unmapRegion(node);
      } finally {
        this.#busy = false;
      }
    },
    addRegionMapping: (node, range, backing, fileOffset, writable) =>
      this.#exclusive(() => this.#addRegionMapping(node, range, backing, fileOffset, writable)),
    removeRegionMappings: (node, range) =>
      this.#exclusive(() => this.#removeRegionMappings(node, range)),
    removeRegion: (node) => this.#exclusive(() => this.#removeRegion(node)),
  };

  /** A manager over the reservation `va` (host address of gpa = va.base + gpa). */
  constructor(va: VaMapper) {
    this.#va = va;
  }

  /** The VA reservation the manager maps into. */
  get va(): VaMapper {
    return this.#va;
  }

  /** Number of regions. */
  get regionCount(): number {
    return this.#regionCount;
  }

  /**
   * Adds an unmapped region. Throws a {@linkcode RegionError} (`overlap`) when it
   * breaks the nesting rule against an existing region, or a
   * {@linkcode RegionError} for a bad priority or a range outside the
   * reservation; nothing is added then.
   */
  newRegion(name: string, range: MemoryRange, priority: number, dmaTarget: boolean): RegionHandle {
    return this.#exclusive(() => this.#newRegion(name, range, priority, dmaTarget));
  }

  #newRegion(name: string, range: MemoryRange, priority: number, dmaTarget: boolean): RegionHandle {
    this.#checkLive();
    if (!Number.isInteger(priority) || priority < 0 || priority > 255) {
      throw new RegionError({ kind: "invalidPriority", name, priority });
    }
    if (range.end > this.#va.size) {
      throw new RegionError({
        kind: "outsideAddressSpace",
        name,
        range,
        addressSpaceSize: this.#va.size,
      });
    }
    const node = new RegionNode(this.#nextId, name, range, priority, dmaTarget);
    if (!range.isEmpty()) {
      const refused = this.#tree.insert(node);
      if (refused !== undefined) {
        // The error names the first offender in insertion order: look for it.
        let first = refused;
        for (const existing of this.#live()) {
          if (!admits(node, existing)) {
            first = existing;
            break;
          }
        }
        throw new RegionError({
          kind: "overlap",
          newName: name,
          newRange: range,
          newPriority: priority,
          existingName: first.name,
          existingRange: first.range,
          existingPriority: first.priority,
          rule: overlapRule(priority, first.priority),
        });
      }
    }
    this.#nextId++;
    this.#order.push(node);
    this.#regionCount++;
    return new RegionHandle(this.#owner, node);
  }

  /**
   * Attaches a partition: maps every active region into it (one
   * `mapRegion` each) and keeps it updated. On failure, unmaps what it had
   * mapped into that partition and rethrows.
   */
  addPartition(mapper: PartitionMapper): void {
    this.#exclusive(() => this.#addPartition(mapper));
  }

  #addPartition(mapper: PartitionMapper): void {
    this.#checkLive();
    const regions = this.#activeSorted();
    let done = 0;
    try {
      for (const node of regions) {
        mapper.mapRegion(node.range, node.params!);
        done++;
      }
    } catch (error) {
      for (let i = 0; i < done; i++) {
        try {
          mapper.unmapRegion(regions[i].range);
        } catch (cause) {
          warn(`failed to unmap ${regions[i].range} from partition`, cause);
        }
      }
      throw error;
    }
    this.#partitions.push(mapper);
  }

  /** Detaches a partition, unmapping every active region from it. */
  removePartition(mapper: PartitionMapper): void {
    this.#exclusive(() => this.#removePartition(mapper));
  }

  #removePartition(mapper: PartitionMapper): void {
    const index = this.#partitions.indexOf(mapper);
    if (index < 0) return;
    this.#partitions.splice(index, 1);
    for (const node of this.#activeSorted()) {
      try {
        mapper.unmapRegion(node.range);
      } catch (cause) {
        warn(`failed to unmap ${node.range} from partition`, cause);
      }
    }
  }

  /**
   * Registers a DMA target: every active sub-mapping of DMA-capable regions
   * is replayed to it as `mapDma` (with host addresses when
   * `needsHostAddress`). Dispose of the handle to unregister; that sends
   * `unmapDma` for every active sub-mapping.
   */
  addDmaTarget(target: DmaTarget, needsHostAddress: boolean): DmaTargetHandle {
    return this.#exclusive(() => this.#addDmaTarget(target, needsHostAddress));
  }

  #addDmaTarget(target: DmaTarget, needsHostAddress: boolean): DmaTargetHandle {
    this.#checkLive();
    const entry: DmaEntry = { target, needsHostAddress };
    for (const node of this.#activeSorted()) {
      if (!node.dmaTarget) continue;
      for (const mapping of node.mappings.toArray()) this.#dmaMap(entry, node, mapping);
    }
    this.#dmaTargets.push(entry);
    let registered = true;
    return {
      target,
      [Symbol.dispose]: () => {
        if (!registered) return;
        this.#exclusive(() => this.#removeDmaTarget(entry));
        registered = false;
      },
    };
  }

  #removeDmaTarget(entry: DmaEntry): void {
    const index = this.#dmaTargets.indexOf(entry);
    if (index >= 0) this.#dmaTargets.splice(index, 1);
    for (const node of this.#activeSorted()) {
      if (!node.dmaTarget) continue;
      for (const mapping of node.mappings.toArray()) {
        this.#dmaUnmap(entry, this.#absolute(node, mapping.range));
      }
    }
  }

  /** Rows for every region, in insertion order. */
  regionInfos(): RegionInfo[] {
    return this.#live().map((node) => ({
      name: node.name,
      range: node.range,
      priority: node.priority,
      dmaTarget: node.dmaTarget,
      active: node.active,
      mapParams: node.params,
      mappings: [...node.mappings.toArray()],
    }));
  }

  /**
   * A plain JSON tree of the regions, keyed `<range>:<name>`: map params (or
   * null), active flag, priority, and mappings keyed by absolute range with
   * writable and hex file offset.
   */
  inspect(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const node of this.#live()) {
      const mappings: Record<string, unknown> = {};
      for (const mapping of node.mappings.toArray()) {
        mappings[`${this.#absolute(node, mapping.range)}`] = {
          writable: mapping.writable,
          file_offset: hex(mapping.fileOffset),
        };
      }
      out[`${node.range}:${node.name}`] = {
        map_params: node.params === undefined ? null : {
          writable: node.params.writable,
          executable: node.params.executable,
          prefetch: node.params.prefetch,
        },
        is_active: node.active,
        priority: node.priority,
        mappings,
      };
    }
    return out;
  }

  /**
   * Deactivates every region (DMA targets, partitions and the VA are told),
   * forgets all regions, partitions and targets. Idempotent.
   */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#exclusive(() => this.#dispose());
  }

  #dispose(): void {
    for (const node of this.#activeSorted()) this.#deactivate(node);
    for (const node of this.#order) node.removed = true;
    this.#order = [];
    this.#regionCount = 0;
    this.#removedInOrder = 0;
    this.#partitions = [];
    this.#dmaTargets = [];
    this.#disposed = true;
  }

  // --- region operations (reached through RegionHandle via #owner) ---

  #mapRegion(node: RegionNode, params: MapParams): void {
    this.#checkNode(node);
    if (sameParams(node.params, params)) return;
    const copy: MapParams = {
      writable: params.writable,
      executable: params.executable,
      prefetch: params.prefetch,
    };
    const wasMapped = node.params !== undefined;
    if (node.range.isEmpty() || this.#tree.hasMappedAncestor(node)) {
      // Something mapped above beats it: nothing visible changes.
      node.params = copy;
      if (!wasMapped) this.#tree.addMappedBelow(node, 1);
      return;
    }
    if (node.active) this.#deactivate(node);
    else if (node.activeBelow > 0) {
      for (const below of this.#tree.activeBelow(node)) this.#deactivate(below);
    }
    node.params = copy;
    if (!wasMapped) this.#tree.addMappedBelow(node, 1);
    this.#activate(node);
  }

  #unmapRegion(node: RegionNode): void {
    this.#checkNode(node);
    this.#unmap(node);
  }

  #addRegionMapping(
    node: RegionNode,
    rangeInRegion: MemoryRange,
    backing: Mappable,
    fileOffset: bigint,
    writable: boolean,
  ): void {
    this.#checkNode(node);
    if (rangeInRegion.end > node.range.len) {
      throw new RegionError({
        kind: "mappingOutsideRegion",
        owner: "memory region",
        name: node.name,
        range: rangeInRegion,
        regionSize: node.range.len,
      });
    }
    if (rangeInRegion.isEmpty()) return;
    checkMappingBacking(node.name, rangeInRegion, backing, fileOffset);
    const existing = node.mappings.firstOverlapping(rangeInRegion.start, rangeInRegion.end);
    if (existing !== undefined) {
      throw new RegionError({
        kind: "mappingOverlap",
        owner: "memory region",
        name: node.name,
        range: rangeInRegion,
        existing: existing.range,
      });
    }
    const mapping: RegionMapping = { range: rangeInRegion, backing, fileOffset, writable };
    if (node.active) {
      const absolute = this.#absolute(node, rangeInRegion);
      this.#va.mapShared(absolute, backing, fileOffset, writable && node.params!.writable);
      if (node.dmaTarget) {
        for (const entry of this.#dmaTargets) this.#dmaMap(entry, node, mapping);
      }
    }
    node.mappings.insert(mapping);
  }

  #removeRegionMappings(node: RegionNode, rangeInRegion: MemoryRange): void {
    this.#checkNode(node);
    if (rangeInRegion.isEmpty()) return; // overlaps nothing
    let removed: RegionMapping[];
    try {
      removed = node.mappings.removeWithin(rangeInRegion.start, rangeInRegion.end);
    } catch (error) {
      if (!(error instanceof RangeListError)) throw error;
      throw new RegionError({
        kind: "partialRemoval",
        owner: "memory region",
        name: node.name,
        range: rangeInRegion,
        mapping: (error.existing as RegionMapping).range,
      });
    }
    if (removed.length === 0) return;
    if (node.active) {
      if (node.dmaTarget) {
        for (const mapping of removed) {
          const absolute = this.#absolute(node, mapping.range);
          for (const entry of this.#dmaTargets) this.#dmaUnmap(entry, absolute);
        }
      }
      for (const mapping of removed) this.#va.unmap(this.#absolute(node, mapping.range));
    }
  }

  #removeRegion(node: RegionNode): void {
    if (node.removed) return;
    this.#unmap(node);
    if (!node.range.isEmpty()) this.#tree.remove(node);
    node.removed = true;
    this.#regionCount--;
    if (++this.#removedInOrder > 32 && this.#removedInOrder * 2 > this.#order.length) {
      this.#order = this.#live();
      this.#removedInOrder = 0;
    }
  }

  // --- internals ---

  #unmap(node: RegionNode): void {
    if (node.params === undefined) return;
    const wasActive = node.active;
    if (wasActive) this.#deactivate(node);
    node.params = undefined;
    this.#tree.addMappedBelow(node, -1);
    if (wasActive && node.mappedBelow > 0) {
      for (const below of this.#tree.topmostMappedBelow(node)) this.#activate(below);
    }
  }

  #activate(node: RegionNode): void {
    const params = node.params!;
    for (const mapping of node.mappings.toArray()) {
      this.#va.mapShared(
        this.#absolute(node, mapping.range),
        mapping.backing,
        mapping.fileOffset,
        mapping.writable && params.writable,
      );
      if (node.dmaTarget) {
        for (const entry of this.#dmaTargets) this.#dmaMap(entry, node, mapping);
      }
    }
    for (const mapper of this.#partitions) {
      try {
        mapper.mapRegion(node.range, params);
      } catch (cause) {
        warn(`failed to map memory region ${node.name} at ${node.range} into partition`, cause);
      }
    }
    node.active = true;
    this.#tree.addActiveBelow(node, 1);
  }

  #deactivate(node: RegionNode): void {
    if (node.dmaTarget) {
      for (const entry of this.#dmaTargets) this.#dmaUnmap(entry, node.range);
    }
    for (const mapper of this.#partitions) {
      try {
        mapper.unmapRegion(node.range);
      } catch (cause) {
        warn(`failed to unmap memory region ${node.name} at ${node.range} from partition`, cause);
      }
    }
    this.#va.unmap(node.range);
    node.active = false;
    this.#tree.addActiveBelow(node, -1);
  }

  #dmaMap(entry: DmaEntry, node: RegionNode, mapping: RegionMapping): void {
    const absolute = this.#absolute(node, mapping.range);
    try {
      entry.target.mapDma(
        absolute,
        entry.needsHostAddress ? this.#va.hostAddress(absolute.start) : undefined,
        mapping.backing,
        mapping.fileOffset,
        mapping.writable && node.params!.writable,
      );
    } catch (cause) {
      warn(`dma target failed to map ${absolute}`, cause);
    }
  }

  #dmaUnmap(entry: DmaEntry, range: MemoryRange): void {
    try {
      entry.target.unmapDma(range);
    } catch (cause) {
      warn(`dma target failed to unmap ${range}`, cause);
    }
  }

  #absolute(node: RegionNode, rangeInRegion: MemoryRange): MemoryRange {
    // Most regions have one mapping covering all of them: no new range then.
    if (rangeInRegion.start === 0n && rangeInRegion.end === node.range.len) return node.range;
    return new MemoryRange(
      node.range.start + rangeInRegion.start,
      node.range.start + rangeInRegion.end,
    );
  }

  /** Live regions in insertion order. */
  #live(): RegionNode[] {
    return this.#order.filter((node) => !node.removed);
  }

  /** Active regions in address order (a walk of the tree, pruned by active counts). */
  #activeSorted(): RegionNode[] {
    const found: RegionNode[] = [];
    const walk = (list: readonly RegionNode[]) => {
      for (const node of list) {
        if (node.active) found.push(node);
        else if (node.activeBelow > 0) walk(node.children);
      }
    };
    walk(this.#tree.roots);
    return found;
  }

  #checkNode(node: RegionNode): void {
    if (node.removed) {
      throw new RegionError({ kind: "removed", name: node.name });
    }
  }

  /**
   * Runs `operation` unless another one is in progress: a partition or DMA
   * target calling back into the manager would otherwise change the region
   * tree in the middle of an activation.
   */
  #exclusive<T>(operation: () => T): T {
    this.#enter();
    try {
      return operation();
    } finally {
      this.#busy = false;
    }
  }

  /** Takes the busy flag (the caller clears it), or throws when an operation is running. */
  #enter(): void {
    if (this.#busy) {
      throw new RegionError({ kind: "reentrant" });
    }
    this.#busy = true;
  }

  #checkLive(): void {
    if (this.#disposed) {
      throw new DisposedError({ object: "region manager" });
    }
  }
}
