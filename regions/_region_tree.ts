import type { MemoryRange } from "../layout/memory_range.ts";
import type { Mappable } from "../mapping/mappable.ts";
import { ChunkedSortedList } from "../collections/_chunked_sorted_list.ts";
import { type RangeKeys, SortedRangeList } from "../collections/_sorted_range_list.ts";
import type { MapParams } from "./_map_params.ts";

/** One mapping of a region: a sub-range (relative to the region) backed by an object. */
export interface RegionMapping {
  /** Range relative to the region start. */
  readonly range: MemoryRange;
  /** The backing object. */
  readonly backing: Mappable;
  /** Offset of `range.start` in the backing object. */
  readonly fileOffset: bigint;
  /** Whether the mapping may be written (also needs writable map params). */
  readonly writable: boolean;
}

/** Mappings keyed by their range inside the region. */
export const MAPPING_KEYS: RangeKeys<RegionMapping> = {
  start: (m) => m.range.start,
  end: (m) => m.range.end,
};

/**
 * The region manager's record of one region, and its place in the nesting
 * tree. Internal: users hold a {@linkcode RegionHandle}.
 */
export class RegionNode {
  /** Insertion sequence number (earlier added = smaller). */
  readonly id: number;
  readonly name: string;
  readonly range: MemoryRange;
  readonly priority: number;
  readonly dmaTarget: boolean;
  params: MapParams | undefined = undefined;
  active = false;
  removed = false;
  /** Mappings ordered by start, disjoint (ranges relative to the region). */
  readonly mappings: SortedRangeList<RegionMapping> = new SortedRangeList(MAPPING_KEYS);
  /** Smallest region containing this one (undefined: top level). */
  parent: RegionNode | undefined = undefined;
  /** Regions directly inside, disjoint, ordered by start (made on first child). */
  children: ChunkedSortedList<RegionNode> | undefined = undefined;
  /**
   * Inside a transaction: what the host showed of the region before its
   * first change there (undefined otherwise).
   */
  applied: { active: boolean; params: MapParams | undefined } | undefined = undefined;
  /** Mapped regions strictly below this one. */
  mappedBelow = 0;
  /** Active regions strictly below this one. */
  activeBelow = 0;

  constructor(id: number, name: string, range: MemoryRange, priority: number, dmaTarget: boolean) {
    this.id = id;
    this.name = name;
    this.range = range;
    this.priority = priority;
    this.dmaTarget = dmaTarget;
  }

  /** Whether the region has map params. */
  get isMapped(): boolean {
    return this.params !== undefined;
  }
}

/**
 * The admission rule: may `incoming` coexist with the overlapping `existing`
 * region? Lower priority must be inside, equal priority must be the same
 * range, higher priority must contain.
 */
export function admits(incoming: RegionNode, existing: RegionNode): boolean {
  if (!incoming.range.overlaps(existing.range)) return true;
  if (incoming.priority < existing.priority) return existing.range.contains(incoming.range);
  if (incoming.priority === existing.priority) return existing.range.equals(incoming.range);
  return incoming.range.contains(existing.range);
}

/**
 * Whether `a` beats `b` where both are mapped over the same addresses:
 * higher priority, or equal priority and added earlier.
 */
function beats(a: RegionNode, b: RegionNode): boolean {
  return a.priority > b.priority || (a.priority === b.priority && a.id < b.id);
}

const endsAbove = (node: RegionNode, address: bigint): boolean => node.range.end > address;

/**
 * The regions as a tree. The admission rule makes them a laminar family: two
 * overlapping regions always nest, the outer one has at least the priority
 * of the inner one, and equal priority means the same range. Identical
 * ranges are nested too (higher priority outside, then the earlier added),
 * so every region's parent is the smallest region beating it that contains
 * it, and siblings are disjoint and sorted by start (binary search).
 *
 * A region is visible (active) exactly when it is mapped and no ancestor is
 * mapped: everything that beats it on its range is an ancestor.
 */
export class RegionTree {
  /** Top-level regions, disjoint, ordered by start. */
  readonly roots: ChunkedSortedList<RegionNode> = new ChunkedSortedList();

  /** The children list of `parent` (the top level for `undefined`), made if missing. */
  childrenOf(parent: RegionNode | undefined): ChunkedSortedList<RegionNode> {
    if (parent === undefined) return this.roots;
    parent.children ??= new ChunkedSortedList();
    return parent.children;
  }

  /**
   * Inserts `node` (non-empty range, not yet in the tree). Returns the first
   * region found that the admission rule refuses, leaving the tree unchanged,
   * or `undefined` when inserted. Among identical regions the node goes by
   * its `id`, so a region taken out and put back returns to its old place.
   * Siblings are kept in chunked lists: inserting among 30,000 top-level
   * regions costs what it costs among ten.
   */
  insert(node: RegionNode): RegionNode | undefined {
    const range = node.range;
    let parent: RegionNode | undefined = undefined;
    for (;;) {
      const list = this.childrenOf(parent);
      const lo = list.firstWhere(endsAbove, range.start);
      const first = list.at(lo);
      if (first === undefined || first.range.start >= range.end) {
        list.insertAt(lo, node);
        node.parent = parent;
        return undefined;
      }
      const second = list.at(list.next(lo));
      if (second === undefined || second.range.start >= range.end) {
        if (first.range.contains(range) && (!first.range.equals(range) || beats(first, node))) {
          // `first` beats the new region here: descend into it.
          if (!admits(node, first)) return first;
          parent = first;
          continue;
        }
      }
      // Everything overlapping at this level must fit inside the new region
      // and be beaten by it (a lower priority, or an identical region added
      // later); their descendants then do too.
      const overlapping: RegionNode[] = [];
      for (let c = lo;; c = list.next(c)) {
        const child = list.at(c);
        if (child === undefined || child.range.start >= range.end) break;
        if (!(admits(node, child) && beats(node, child))) return child;
        overlapping.push(child);
      }
      const children = new ChunkedSortedList<RegionNode>();
      for (const child of overlapping) {
        list.removeAt(list.firstWhere(endsAbove, child.range.start));
        children.insertAt(children.firstWhere(endsAbove, child.range.start), child);
        child.parent = node;
        node.mappedBelow += child.mappedBelow + (child.isMapped ? 1 : 0);
        node.activeBelow += child.activeBelow + (child.active ? 1 : 0);
      }
      list.insertAt(list.firstWhere(endsAbove, range.start), node);
      node.children = children;
      node.parent = parent;
      return undefined;
    }
  }

  /** Takes `node` out of the tree; its children take its place under its parent. */
  remove(node: RegionNode): void {
    const list = this.childrenOf(node.parent);
    const cursor = list.firstWhere(endsAbove, node.range.start);
    if (list.at(cursor) !== node) throw new RangeError("region tree is inconsistent");
    list.removeAt(cursor);
    for (const child of node.children?.toArray() ?? []) {
      child.parent = node.parent;
      list.insertAt(list.firstWhere(endsAbove, child.range.start), child);
    }
    node.children = undefined;
    node.parent = undefined;
    node.mappedBelow = 0;
    node.activeBelow = 0;
  }

  /** Whether any ancestor of `node` is mapped. */
  hasMappedAncestor(node: RegionNode): boolean {
    for (let p = node.parent; p !== undefined; p = p.parent) {
      if (p.params !== undefined) return true;
    }
    return false;
  }

  /** Adds `delta` to `mappedBelow` of every ancestor. */
  addMappedBelow(node: RegionNode, delta: number): void {
    for (let p = node.parent; p !== undefined; p = p.parent) p.mappedBelow += delta;
  }

  /** Adds `delta` to `activeBelow` of every ancestor. */
  addActiveBelow(node: RegionNode, delta: number): void {
    for (let p = node.parent; p !== undefined; p = p.parent) p.activeBelow += delta;
  }

  /** Active regions strictly below `node`, in address order. */
  activeBelow(node: RegionNode): RegionNode[] {
    const found: RegionNode[] = [];
    const walk = (n: RegionNode) => {
      for (const child of n.children?.toArray() ?? []) {
        if (child.active) found.push(child);
        else if (child.activeBelow > 0) walk(child);
      }
    };
    if (node.activeBelow > 0) walk(node);
    return found;
  }

  /** The topmost mapped regions strictly below `node`, in address order. */
  topmostMappedBelow(node: RegionNode): RegionNode[] {
    const found: RegionNode[] = [];
    const walk = (n: RegionNode) => {
      for (const child of n.children?.toArray() ?? []) {
        if (child.isMapped) found.push(child);
        else if (child.mappedBelow > 0) walk(child);
      }
    };
    if (node.mappedBelow > 0) walk(node);
    return found;
  }
}
