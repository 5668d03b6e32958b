import { lowerBound } from "../collections/_lower_bound.ts";
import { RangeListError } from "../collections/_sorted_range_list.ts";
import { DisposedError } from "../diagnostics/disposed_error.ts";
import { warn } from "../diagnostics/warnings.ts";
import { isWritableDescriptor } from "../ffi/_file_stat.ts";
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
import { type JournalUndo, TransactionJournal } from "./_transaction_journal.ts";
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

const idAtLeast = (node: RegionNode, id: number): boolean => node.id >= id;

/** Backings known to be open for writing, or not (a descriptor's access mode never changes). */
const backingWritable = new WeakMap<
  Mappable,
  { readonly fd: number; readonly writable: boolean }
>();

/** Whether `backing`'s descriptor is open for writing (cached per backing object). */
function writableBacking(backing: Mappable): boolean {
  const known = backingWritable.get(backing);
  if (known !== undefined && known.fd === backing.fd) return known.writable;
  const writable = isWritableDescriptor(backing.fd);
  backingWritable.set(backing, { fd: backing.fd, writable });
  return writable;
}

/**
 * The protection of a mapping's host pages: writable where the mapping is,
 * even while the region is read-only (flipping it back then needs no new
 * host mapping; the table refuses host writes meanwhile), except where the
 * descriptor is read-only and the region too (then it cannot be).
 */
function hostWritable(
  mappingWritable: boolean,
  regionWritable: boolean,
  backing: Mappable,
): boolean {
  if (!mappingWritable) return false;
  return regionWritable || writableBacking(backing);
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
  /** Open transactions, and the regions changed in them whose host side waits for the end. */
  #batchDepth = 0;
  #pending: RegionNode[] = [];
  /** What the tree did in the open transaction since the host last caught up (for a rollback). */
  readonly #journal = new TransactionJournal();
  /** How a rollback undoes journaled changes (deferred, so no system call). */
  readonly #undo: JournalUndo = {
    setParams: (node, params) => {
      if (params === undefined) this.#unmap(node);
      else this.#mapRegion(node, params);
    },
    remove: (node) => this.#removeRegion(node),
    restore: (node) => this.#restoreRegion(node),
  };
  /** What handles call; kept off the public surface. */
  readonly #owner: RegionOwner = {
    // Map and unmap are the hot path (RAM visibility flips): they take the
    // busy flag inline rather than through #exclusive, which would allocate
    // a closure per call.
    mapRegion: (node, params) => {
      this.#enter();
      try {
        const old = node.params;
        this.#mapRegion(node, params);
        if (this.#batchDepth > 0) this.#journal.params(node, old);
      } finally {
        this.#busy = false;
      }
    },
    unmapRegion: (node) => {
      this.#enter();
      try {
        const old = node.params;
        this.#unmapRegion(node);
        if (this.#batchDepth > 0) this.#journal.params(node, old);
      } finally {
        this.#busy = false;
      }
    },
    addRegionMapping: (node, range, backing, fileOffset, writable) =>
      this.#exclusive(() => this.#addRegionMapping(node, range, backing, fileOffset, writable)),
    removeRegionMappings: (node, range) =>
      this.#exclusive(() => this.#removeRegionMappings(node, range)),
    removeRegion: (node) =>
      this.#exclusive(() => {
        const { removed, params } = node;
        this.#removeRegion(node);
        if (!removed && this.#batchDepth > 0) this.#journal.removed(node, params);
      }),
    restoreRegion: (node) =>
      this.#exclusive(() => {
        const removed = node.removed;
        this.#restoreRegion(node);
        if (removed && this.#batchDepth > 0) this.#journal.restored(node);
      }),
    checkMoveRegion: (node, range) => this.#exclusive(() => this.#checkMoveRegion(node, range)),
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
      if (refused !== undefined) throw this.#overlapError(node, refused, undefined);
    }
    this.#nextId++;
    this.#order.push(node);
    this.#regionCount++;
    if (this.#batchDepth > 0) this.#journal.added(node);
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
    this.#flush();
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

  /**
   * Detaches a partition, unmapping every active region from it. When the
   * partition fails to unmap one, what was unmapped is mapped again, the
   * partition stays attached and the {@linkcode RegionError}
   * (`partitionUnmap`) is thrown; with `strict` false (for disposal), the
   * failure is a warning and the partition is detached anyway.
   */
  removePartition(mapper: PartitionMapper, strict = true): void {
    this.#exclusive(() => this.#removePartition(mapper, strict));
  }

  #removePartition(mapper: PartitionMapper, strict: boolean): void {
    this.#flush();
    const index = this.#partitions.indexOf(mapper);
    if (index < 0) return;
    const regions = this.#activeSorted();
    let done = 0;
    try {
      for (; done < regions.length; done++) {
        try {
          mapper.unmapRegion(regions[done].range);
        } catch (cause) {
          if (strict) throw cause;
          warn(`failed to unmap ${regions[done].range} from partition`, cause);
        }
      }
    } catch (cause) {
      // Still attached, with every region mapped as before.
      for (const node of regions.slice(0, done)) {
        this.#mapPartitionsQuietly(node, [mapper], node.params!);
      }
      const node = regions[done];
      throw new RegionError({ kind: "partitionUnmap", name: node.name, range: node.range }, {
        cause,
      });
    }
    this.#partitions.splice(index, 1);
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
    this.#flush();
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
    this.#flush();
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
    this.#batchDepth = 0;
    try {
      this.#flush();
    } catch (cause) {
      warn("a transaction's changes failed while the region manager was disposed", cause);
    }
    // Going away whatever fails: a failure is only a warning.
    for (const node of this.#activeSorted()) this.#deactivateQuietly(node);
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
    if (node.active && this.#canChangeInPlace(node, copy)) {
      // Visible now and visible after: the host keeps seeing the same
      // memory, so only partitions, DMA targets and the table change.
      this.#changeParams(node, copy);
      return;
    }
    if (node.active) {
      // A read-only descriptor mapped read-only: write access needs a new
      // host mapping (which fails as mmap does).
      this.#deactivate(node);
      const old = node.params;
      node.params = copy;
      try {
        this.#activate(node);
      } catch (error) {
        node.params = old;
        this.#reactivate(node);
        throw error;
      }
      return;
    }
    const old = node.params;
    // What the guest saw on the range: what this region now beats.
    const hidden = this.#tree.activeBelow(node);
    let hiddenNow = 0;
    try {
      for (; hiddenNow < hidden.length; hiddenNow++) this.#deactivate(hidden[hiddenNow]);
    } catch (error) {
      for (let i = 0; i < hiddenNow; i++) this.#reactivate(hidden[i]);
      throw error;
    }
    node.params = copy;
    if (!wasMapped) this.#tree.addMappedBelow(node, 1);
    try {
      this.#activate(node);
    } catch (error) {
      // Nothing of the new mapping is left (#activate undid itself): show
      // again what was shown, with the params it had.
      node.params = old;
      if (!wasMapped) this.#tree.addMappedBelow(node, -1);
      for (const shown of hidden) this.#reactivate(shown);
      throw error;
    }
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
    // A region changed in an open transaction: its host side first; a
    // region the host shows: everything pending first (a rollback of the
    // transaction cannot take back a host mapping made now).
    if (node.applied !== undefined || (this.#batchDepth > 0 && node.active)) this.#flush();
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
      this.#va.mapShared(
        absolute,
        backing,
        fileOffset,
        writable && node.params!.writable,
        hostWritable(writable, node.params!.writable, backing),
      );
      if (node.dmaTarget) {
        for (const entry of this.#dmaTargets) this.#dmaMap(entry, node, mapping);
      }
    }
    node.mappings.insert(mapping);
    if (this.#batchDepth > 0 && !node.active) this.#journal.mappingAdded(node, mapping);
  }

  #removeRegionMappings(node: RegionNode, rangeInRegion: MemoryRange): void {
    // As for adding a mapping: what is pending first where the host could change.
    if (node.applied !== undefined || (this.#batchDepth > 0 && node.active)) this.#flush();
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
    if (removed.length > 0 && !node.active && this.#batchDepth > 0) {
      this.#journal.mappingsRemoved(node, removed);
    }
    if (removed.length === 0 || !node.active) return;
    try {
      this.#unmapMappings(node, removed);
    } catch (error) {
      for (const mapping of removed) node.mappings.insert(mapping);
      throw error;
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

  /**
   * Puts the removed `node` back in the tree and the insertion order at the
   * place its id gives it, unmapped, with the mappings it had. Only valid
   * when nothing that would refuse it was added meanwhile (a rollback).
   */
  #restoreRegion(node: RegionNode): void {
    this.#checkLive();
    if (!node.removed) return;
    if (!node.range.isEmpty()) {
      const refused = this.#tree.insert(node);
      if (refused !== undefined) throw this.#overlapError(node, refused, undefined);
    }
    node.removed = false;
    this.#regionCount++;
    const index = lowerBound(this.#order, idAtLeast, node.id);
    if (this.#order[index] === node) this.#removedInOrder--; // not compacted away yet
    else this.#order.splice(index, 0, node);
  }

  /**
   * Throws the {@linkcode RegionError} that removing `node` and adding the
   * same region at `range` would throw (outside the address space, or an
   * overlap with a region other than `node`), changing nothing: lets a move
   * be refused before anything is taken down.
   */
  #checkMoveRegion(node: RegionNode, range: MemoryRange): void {
    this.#checkNode(node);
    this.#checkLive();
    if (range.end > this.#va.size) {
      throw new RegionError({
        kind: "outsideAddressSpace",
        name: node.name,
        range,
        addressSpaceSize: this.#va.size,
      });
    }
    if (range.isEmpty()) return;
    const probe = new RegionNode(this.#nextId, node.name, range, node.priority, node.dmaTarget);
    // Take `node` out for the trial; the tree's shape depends only on its
    // regions, so putting it back restores it exactly (ids keep the order
    // of identical regions). No region changes state meanwhile.
    const inTree = !node.range.isEmpty();
    if (inTree) this.#tree.remove(node);
    const refused = this.#tree.insert(probe);
    if (refused === undefined) this.#tree.remove(probe);
    if (inTree) this.#tree.insert(node);
    if (refused !== undefined) throw this.#overlapError(probe, refused, node);
  }

  // --- internals ---

  /**
   * The overlap error for `node`, naming the first region in insertion order
   * that refuses it (`refused`, found by the tree, is one of them), `except`
   * left out.
   */
  #overlapError(
    node: RegionNode,
    refused: RegionNode,
    except: RegionNode | undefined,
  ): RegionError {
    let first = refused;
    for (const existing of this.#live()) {
      if (existing !== except && !admits(node, existing)) {
        first = existing;
        break;
      }
    }
    return new RegionError({
      kind: "overlap",
      newName: node.name,
      newRange: node.range,
      newPriority: node.priority,
      existingName: first.name,
      existingRange: first.range,
      existingPriority: first.priority,
      rule: overlapRule(node.priority, first.priority),
    });
  }

  /**
   * Forgets the params of `node`; when it was visible, what it hid shows.
   * When one of those fails to activate, the ones shown so far go again and
   * `node` is visible as before: the error is rethrown, nothing changed.
   */
  #unmap(node: RegionNode): void {
    const old = node.params;
    if (old === undefined) return;
    const wasActive = node.active;
    if (wasActive) this.#deactivate(node);
    node.params = undefined;
    this.#tree.addMappedBelow(node, -1);
    if (!wasActive || node.mappedBelow === 0) return;
    const shown: RegionNode[] = [];
    try {
      for (const below of this.#tree.topmostMappedBelow(node)) {
        this.#activate(below);
        shown.push(below);
      }
    } catch (error) {
      for (const below of shown) this.#deactivateQuietly(below);
      node.params = old;
      this.#tree.addMappedBelow(node, 1);
      this.#reactivate(node);
      throw error;
    }
  }

  /**
   * Makes `node` visible: its mappings into the VA (DMA targets told of
   * each), then the whole range into every partition. When a mapping fails,
   * the ones made so far are taken out again (DMA targets first) and the
   * error is rethrown: the node is then as inactive as before.
   */
  #activate(node: RegionNode): void {
    if (this.#batchDepth > 0) this.#defer(node);
    else this.#showInHost(node, node.params!);
    node.active = true;
    this.#tree.addActiveBelow(node, 1);
  }

  /** What activating `node` with `params` does outside the tree (undone on failure). */
  #showInHost(node: RegionNode, params: MapParams): void {
    const mappings = node.mappings.toArray();
    let done = 0;
    try {
      for (; done < mappings.length; done++) {
        const mapping = mappings[done];
        this.#mapMapping(node, mapping, params);
        if (node.dmaTarget) {
          for (const entry of this.#dmaTargets) this.#dmaMap(entry, node, mapping);
        }
      }
    } catch (error) {
      this.#unmapMappingsQuietly(node, mappings.slice(0, done));
      throw error;
    }
    const partitions = this.#partitions;
    let mapped = 0;
    try {
      for (; mapped < partitions.length; mapped++) partitions[mapped].mapRegion(node.range, params);
    } catch (cause) {
      this.#unmapPartitionsQuietly(node, partitions.slice(0, mapped));
      this.#unmapMappingsQuietly(node, mappings);
      throw new RegionError({ kind: "partitionMap", name: node.name, range: node.range }, {
        cause,
      });
    }
  }

  /**
   * New params for an active region: partitions get the region again with
   * them (a KVM slot cannot change its read-only flag in place), DMA
   * targets hear a change of writability as unmap and map, and the host
   * mapping table changes writability without remapping host memory (the
   * host mappings keep the protection of their mappings).
   */
  #changeParams(node: RegionNode, params: MapParams): void {
    if (this.#batchDepth > 0) {
      this.#defer(node);
      node.params = params;
      return;
    }
    // (Counted, not collected, and no closures: no allocation on the way that succeeds.)
    const old = node.params!;
    const writableChanged = old.writable !== params.writable;
    const dma = node.dmaTarget && writableChanged;
    if (dma) {
      for (const entry of this.#dmaTargets) this.#dmaUnmap(entry, node.range);
    }
    const partitions = this.#partitions;
    this.#unmapFromPartitions(node, old, dma);
    node.params = params;
    if (writableChanged) {
      try {
        this.#setMappingsWritable(node, params.writable);
      } catch (error) {
        // The readers' grace period failed: back to the old writability
        // (giving write access back waits for nobody) and the old slots.
        this.#setMappingsWritable(node, old.writable);
        node.params = old;
        this.#mapPartitionsQuietly(node, partitions, old);
        if (dma) this.#dmaMapAll(node);
        throw error;
      }
      if (node.dmaTarget) this.#dmaMapAll(node);
    }
    let mapped = 0;
    try {
      for (; mapped < partitions.length; mapped++) partitions[mapped].mapRegion(node.range, params);
    } catch (cause) {
      // Back to the old params everywhere.
      this.#unmapPartitionsQuietly(node, partitions.slice(0, mapped));
      if (dma) {
        for (const entry of this.#dmaTargets) this.#dmaUnmap(entry, node.range);
      }
      node.params = old;
      if (writableChanged) this.#setMappingsWritable(node, old.writable);
      if (dma) this.#dmaMapAll(node);
      this.#mapPartitionsQuietly(node, partitions, old);
      throw new RegionError({ kind: "partitionMap", name: node.name, range: node.range }, {
        cause,
      });
    }
  }

  /** Sets the host table's writability of `node`'s mappings for a region that is `writable`. */
  #setMappingsWritable(node: RegionNode, writable: boolean): void {
    for (const mapping of node.mappings.toArray()) {
      this.#va.setWritable(this.#absolute(node, mapping.range), mapping.writable && writable);
    }
  }

  /** Maps `node` into `mappers` with `params` for a rollback; failures are only warnings. */
  #mapPartitionsQuietly(
    node: RegionNode,
    mappers: readonly PartitionMapper[],
    params: MapParams,
  ): void {
    for (const mapper of mappers) {
      try {
        mapper.mapRegion(node.range, params);
      } catch (cause) {
        warn(`failed to map memory region ${node.name} at ${node.range} into partition`, cause);
      }
    }
  }

  /** Unmaps `node` from `mappers` for a rollback; failures are only warnings. */
  #unmapPartitionsQuietly(node: RegionNode, mappers: readonly PartitionMapper[]): void {
    for (const mapper of mappers) {
      try {
        mapper.unmapRegion(node.range);
      } catch (cause) {
        warn(`failed to unmap memory region ${node.name} at ${node.range} from partition`, cause);
      }
    }
  }

  /** {@linkcode #unmapMappings} for a rollback: a failure now is only a warning. */
  #unmapMappingsQuietly(node: RegionNode, mappings: readonly RegionMapping[]): void {
    try {
      this.#unmapMappings(node, mappings);
    } catch (cause) {
      warn(`failed to take memory region ${node.name} at ${node.range} out again`, cause);
    }
  }

  /** Activates `node` again after a failed change; a failure now is only a warning. */
  #reactivate(node: RegionNode): void {
    try {
      this.#activate(node);
    } catch (cause) {
      warn(`failed to restore memory region ${node.name} at ${node.range}`, cause);
    }
  }

  /**
   * Takes `mappings` of the active `node` out: DMA targets first, then the
   * VA. When the VA fails, the mappings taken out so far go back in, DMA
   * targets hear of them again, and the error is rethrown.
   */
  #unmapMappings(node: RegionNode, mappings: readonly RegionMapping[]): void {
    if (node.dmaTarget) {
      for (const mapping of mappings) {
        const absolute = this.#absolute(node, mapping.range);
        for (const entry of this.#dmaTargets) this.#dmaUnmap(entry, absolute);
      }
    }
    let done = 0;
    try {
      for (; done < mappings.length; done++) {
        this.#va.unmap(this.#absolute(node, mappings[done].range));
      }
    } catch (error) {
      const params = node.params!;
      for (const mapping of mappings.slice(0, done)) {
        try {
          this.#mapMapping(node, mapping, params);
        } catch (cause) {
          warn(`failed to map ${this.#absolute(node, mapping.range)} again`, cause);
        }
      }
      if (node.dmaTarget) {
        for (const mapping of mappings) {
          for (const entry of this.#dmaTargets) this.#dmaMap(entry, node, mapping);
        }
      }
      throw error;
    }
  }

  /**
   * Whether `node`'s host mappings already allow what `params` asks, so that
   * new params need no new host mapping: taking write access away always
   * can; giving it needs every writable mapping's descriptor to be open for
   * writing (it was then mapped writable in the first place).
   */
  #canChangeInPlace(node: RegionNode, params: MapParams): boolean {
    if (!params.writable || node.params!.writable) return true;
    for (const mapping of node.mappings.toArray()) {
      if (mapping.writable && !writableBacking(mapping.backing)) return false;
    }
    return true;
  }

  /**
   * Makes `node` invisible: DMA targets, partitions, then the host range.
   * When the host range cannot be taken away (the VA is then as before),
   * partitions and DMA targets get the region back and the error is
   * rethrown: `node` is as active as before.
   */
  #deactivate(node: RegionNode): void {
    if (this.#batchDepth > 0) this.#defer(node);
    else this.#hideInHost(node);
    node.active = false;
    this.#tree.addActiveBelow(node, -1);
  }

  /** Maps one mapping of `node` into the host reservation with the region's `params`. */
  #mapMapping(node: RegionNode, mapping: RegionMapping, params: MapParams): void {
    this.#va.mapShared(
      this.#absolute(node, mapping.range),
      mapping.backing,
      mapping.fileOffset,
      mapping.writable && params.writable,
      hostWritable(mapping.writable, params.writable, mapping.backing),
    );
  }

  /** What deactivating `node` does outside the tree (undone on failure). */
  #hideInHost(node: RegionNode): void {
    if (node.dmaTarget) {
      for (const entry of this.#dmaTargets) this.#dmaUnmap(entry, node.range);
    }
    this.#unmapFromPartitions(node, node.params!, true);
    try {
      this.#va.unmap(node.range);
    } catch (error) {
      this.#mapPartitionsQuietly(node, this.#partitions, node.params!);
      this.#dmaMapAll(node);
      throw error;
    }
  }

  /**
   * Unmaps `node` from every partition. When one refuses, the ones done
   * get it back with `params` (and the DMA targets, when `dmaBack`) and
   * {@linkcode RegionError} `partitionUnmap` is thrown. (Counted, not
   * collected: no allocation on the way that succeeds.)
   */
  #unmapFromPartitions(node: RegionNode, params: MapParams, dmaBack: boolean): void {
    const partitions = this.#partitions;
    let unmapped = 0;
    try {
      for (; unmapped < partitions.length; unmapped++) partitions[unmapped].unmapRegion(node.range);
    } catch (cause) {
      this.#mapPartitionsQuietly(node, partitions.slice(0, unmapped), params);
      if (dmaBack) this.#dmaMapAll(node);
      throw new RegionError({ kind: "partitionUnmap", name: node.name, range: node.range }, {
        cause,
      });
    }
  }

  /** Tells every DMA target of each mapping of `node` (when it is a DMA region). */
  #dmaMapAll(node: RegionNode): void {
    if (!node.dmaTarget) return;
    for (const mapping of node.mappings.toArray()) {
      for (const entry of this.#dmaTargets) this.#dmaMap(entry, node, mapping);
    }
  }

  /** {@linkcode #deactivate} for a rollback: a failure now is only a warning. */
  #deactivateQuietly(node: RegionNode): void {
    try {
      this.#deactivate(node);
    } catch (cause) {
      warn(`failed to take memory region ${node.name} at ${node.range} out again`, cause);
    }
  }

  // --- transactions ---

  /**
   * Starts a transaction: until the returned handle is disposed (nested
   * transactions: the outermost one), map and unmap changes update the
   * priority map only; the host reservation, partitions and DMA targets get
   * the net result at the end, region by region, as the fewest changes
   * (a region flipped and flipped back costs nothing). Operations that
   * change the host at once (a mapping of a region the host shows,
   * partitions, DMA targets) apply what is pending first. Applying is
   * atomic: when one change fails, the ones applied before it are undone
   * and every region change made since the host last caught up is taken
   * back, then the error is thrown.
   */
  beginTransaction(): Disposable {
    this.#checkLive();
    this.#batchDepth++;
    let open = true;
    return {
      [Symbol.dispose]: () => {
        if (!open) return;
        open = false;
        if (--this.#batchDepth === 0) this.#exclusive(() => this.#flush());
      },
    };
  }

  /** Remembers what the host shows of `node` before its first change in a transaction. */
  #defer(node: RegionNode): void {
    if (node.applied !== undefined) return;
    node.applied = { active: node.active, params: node.params };
    this.#pending.push(node);
  }

  /**
   * Applies the pending changes of a transaction: hidden regions first, then
   * changed ones, then shown ones, so that partitions never get overlapping
   * ranges. Each region goes from what the host showed before (its
   * `applied` record) to what the tree says now. When one fails (it undid
   * itself), the ones applied before it are undone, newest first, and the
   * journal takes the tree back: the region manager is then as it was when
   * the host last caught up, and the error is rethrown.
   */
  #flush(): void {
    const pending = this.#pending;
    if (pending.length === 0) {
      this.#journal.clear();
      return;
    }
    // Applied for real, also from inside a transaction (a mapping change).
    const depth = this.#batchDepth;
    this.#batchDepth = 0;
    const steps = this.#steps(pending);
    let done = 0;
    try {
      for (; done < steps.length; done++) this.#applyStep(steps[done], true);
    } catch (error) {
      for (let i = done - 1; i >= 0; i--) {
        try {
          this.#applyStep(steps[i], false);
        } catch (cause) {
          warn("failed to undo a change of a transaction", cause);
        }
      }
      this.#batchDepth = Math.max(depth, 1);
      this.#rollBack();
      throw error;
    } finally {
      this.#batchDepth = depth;
    }
    for (const node of pending) node.applied = undefined;
    this.#pending = [];
    this.#journal.clear();
  }

  /**
   * The host changes of `pending`, in order: hidden regions, then regions
   * whose params change in place (one group: partitions that can batch get
   * them as one batch), then other changed ones, then shown ones, so that
   * partitions never get overlapping ranges.
   */
  #steps(pending: readonly RegionNode[]): (RegionNode | RegionNode[])[] {
    const hides: RegionNode[] = [];
    const inPlace: RegionNode[] = [];
    const others: RegionNode[] = [];
    const shows: RegionNode[] = [];
    for (const node of pending) {
      const before = node.applied!;
      if (before.active && !node.active) hides.push(node);
      else if (!before.active && node.active) shows.push(node);
      else if (before.active && node.active && !sameParams(before.params, node.params!)) {
        const now = node.params!;
        node.params = before.params;
        const fits = this.#canChangeInPlace(node, now);
        node.params = now;
        (fits ? inPlace : others).push(node);
      }
    }
    return [...hides, ...(inPlace.length > 0 ? [inPlace] : []), ...others, ...shows];
  }

  /**
   * Takes one step of a flush from what the host showed (the `applied`
   * record) to what the tree says (`forward`), or back. Atomic.
   */
  #applyStep(step: RegionNode | RegionNode[], forward: boolean): void {
    if (Array.isArray(step)) {
      // Backward is the undo of the group applied forward: exactly, where
      // the partitions can.
      if (forward) this.#changeGroup(step);
      else this.#revertGroup(step, this.#partitions.map(() => true));
      return;
    }
    const before = step.applied!;
    if (forward) this.#transition(step, before.active, before.params, step.active, step.params);
    else this.#transition(step, step.active, step.params, before.active, before.params);
  }

  /**
   * Changes the params of active `nodes` in place, from their `applied`
   * params to the tree's: each partition that can batch gets all of them as
   * one batch, committed at the end. All or nothing.
   */
  #changeGroup(nodes: readonly RegionNode[]): void {
    const mappers = this.#partitions;
    const batched = mappers.map((m) => m.beginBatch());
    let done = 0;
    try {
      for (; done < nodes.length; done++) this.#changeInPlace(nodes[done], true);
    } catch (error) {
      for (let i = done - 1; i >= 0; i--) this.#changeInPlaceQuietly(nodes[i], false);
      mappers.forEach((m, i) => batched[i] && m.abortBatch());
      throw error;
    }
    for (let k = 0; k < mappers.length; k++) {
      if (!batched[k]) continue;
      try {
        mappers[k].commitBatch();
      } catch (cause) {
        // Partition k is as before its batch, the later ones get none; the
        // earlier ones, the DMA targets and the table are taken back.
        for (let j = k + 1; j < mappers.length; j++) if (batched[j]) mappers[j].abortBatch();
        this.#revertGroup(nodes, mappers.map((_, j) => batched[j] && j < k));
        const names = [...new Set(nodes.map((n) => n.name))].join(", ");
        const start = nodes.reduce(
          (lo, n) => (n.range.start < lo ? n.range.start : lo),
          nodes[0].range.start,
        );
        const end = nodes.reduce(
          (hi, n) => (n.range.end > hi ? n.range.end : hi),
          nodes[0].range.end,
        );
        throw new RegionError({
          kind: "partitionMap",
          name: names,
          range: new MemoryRange(start, end),
        }, { cause });
      }
    }
  }

  /**
   * Takes back a group of in-place changes (quietly: a rollback): partitions
   * that committed its batch (`committed`) undo that batch exactly where
   * they can (the slot structure as it was), the others get the inverse
   * changes (in a batch that changes nothing where none was committed);
   * DMA targets and the table go back too.
   */
  #revertGroup(nodes: readonly RegionNode[], committed: readonly boolean[]): void {
    const mappers = this.#partitions;
    const reverted = mappers.map((m, j) => {
      if (!committed[j]) return false;
      try {
        return m.revertBatch();
      } catch (cause) {
        warn("failed to undo a batch of partition changes", cause);
        return false;
      }
    });
    const batched = mappers.map((m) => m.beginBatch());
    for (let i = nodes.length - 1; i >= 0; i--) this.#changeInPlaceQuietly(nodes[i], false);
    mappers.forEach((m, j) => {
      if (!batched[j]) return;
      if (reverted[j]) {
        m.abortBatch(); // its slots are back already
        return;
      }
      try {
        m.commitBatch();
      } catch (cause) {
        warn("failed to undo a batch of partition changes", cause);
      }
    });
  }

  /** Changes the params of the active `node` in place, from `applied` to the tree's (or back). */
  #changeInPlace(node: RegionNode, forward: boolean): void {
    const now = node.params!;
    const before = node.applied!.params!;
    node.params = forward ? before : now;
    try {
      this.#changeParams(node, forward ? now : before);
    } finally {
      node.params = now;
    }
  }

  /** {@linkcode #changeInPlace} for a rollback: a failure now is only a warning. */
  #changeInPlaceQuietly(node: RegionNode, forward: boolean): void {
    try {
      this.#changeInPlace(node, forward);
    } catch (cause) {
      warn(`failed to undo a change of memory region ${node.name} at ${node.range}`, cause);
    }
  }

  /**
   * After a failed flush whose applied changes were undone (the host shows
   * every pending region as its `applied` record says): takes the tree
   * back through the journal, with changes deferred, so that each pending
   * region is again what the host shows.
   */
  #rollBack(): void {
    this.#journal.rewind(this.#undo);
    const pending = this.#pending;
    this.#pending = [];
    for (const node of pending) {
      const before = node.applied!;
      node.applied = undefined;
      if (
        before.active === node.active && (!node.active || sameParams(before.params, node.params!))
      ) {
        continue;
      }
      // Cannot happen when the journal is complete; say so rather than hide it.
      warn(`memory region ${node.name} at ${node.range} is out of step after a rollback`);
    }
  }

  /**
   * Takes `node` in the host from (`fromActive`, `fromParams`) to
   * (`toActive`, `toParams`): hides, shows, or changes its params (in place
   * where the host mappings allow it, else hidden and shown again). Atomic:
   * on failure the host shows what it showed before, and `node.params` is
   * left as the tree has it.
   */
  #transition(
    node: RegionNode,
    fromActive: boolean,
    fromParams: MapParams | undefined,
    toActive: boolean,
    toParams: MapParams | undefined,
  ): void {
    const now = node.params;
    // The host-side steps read node.params: the params the host has when
    // hiding or changing, the ones being shown when showing.
    node.params = fromParams;
    try {
      if (fromActive && !toActive) {
        this.#hideInHost(node);
      } else if (!fromActive && toActive) {
        node.params = toParams;
        this.#showInHost(node, toParams!);
      } else if (fromActive && toActive && !sameParams(fromParams, toParams!)) {
        if (this.#canChangeInPlace(node, toParams!)) {
          this.#changeParams(node, toParams!);
        } else {
          this.#hideInHost(node);
          try {
            node.params = toParams;
            this.#showInHost(node, toParams!);
          } catch (error) {
            try {
              node.params = fromParams;
              this.#showInHost(node, fromParams!);
            } catch (cause) {
              warn(`failed to restore memory region ${node.name} at ${node.range}`, cause);
            }
            throw error;
          }
        }
      }
    } finally {
      node.params = now;
    }
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
        else if (node.activeBelow > 0 && node.children !== undefined) walk(node.children.toArray());
      }
    };
    walk(this.#tree.roots.toArray());
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
