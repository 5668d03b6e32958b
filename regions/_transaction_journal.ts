/**
 * The undo journal of a transaction of region changes: what the region
 * manager changed in its tree since the host last caught up (the last
 * point where pending changes were applied), so that a failure to apply
 * them can put the tree back exactly as it was at that point.
 *
 * Only changes the host has not seen yet are journaled: map params set or
 * forgotten, regions added, removed or restored, and mappings added to or
 * removed from regions the host does not show. Changes that reach the host
 * at once inside a transaction (a mapping of a visible region) are made
 * after the pending ones are applied, so they start a new journal.
 *
 * @module
 */

import type { MapParams } from "./_map_params.ts";
import type { RegionMapping, RegionNode } from "./_region_tree.ts";

/** One journaled change, with what undoing it needs. */
type Entry =
  | { readonly kind: "params"; readonly node: RegionNode; readonly old: MapParams | undefined }
  | { readonly kind: "added"; readonly node: RegionNode }
  | { readonly kind: "removed"; readonly node: RegionNode; readonly old: MapParams | undefined }
  | { readonly kind: "restored"; readonly node: RegionNode }
  | { readonly kind: "mappingAdded"; readonly node: RegionNode; readonly mapping: RegionMapping }
  | {
    readonly kind: "mappingsRemoved";
    readonly node: RegionNode;
    readonly mappings: readonly RegionMapping[];
  };

/**
 * The tree operations that undo journaled changes, run by the region
 * manager while changes are deferred (so none of them touches the host and
 * none can fail on a system call).
 */
export interface JournalUndo {
  /** Gives `node` the map params `params`, or unmaps it (undefined). */
  setParams(node: RegionNode, params: MapParams | undefined): void;
  /** Takes the region `node` out again (it was added or restored). */
  remove(node: RegionNode): void;
  /** Puts the removed region `node` back, unmapped. */
  restore(node: RegionNode): void;
}

/** The changes of an open transaction not yet applied to the host, oldest first. */
export class TransactionJournal {
  #entries: Entry[] = [];

  /** Number of journaled changes. */
  get length(): number {
    return this.#entries.length;
  }

  /** `node` had map params `old` (undefined: unmapped) before a map or unmap. */
  params(node: RegionNode, old: MapParams | undefined): void {
    this.#entries.push({ kind: "params", node, old });
  }

  /** `node` was added. */
  added(node: RegionNode): void {
    this.#entries.push({ kind: "added", node });
  }

  /** `node`, with map params `old`, was removed. */
  removed(node: RegionNode, old: MapParams | undefined): void {
    this.#entries.push({ kind: "removed", node, old });
  }

  /** The removed `node` was put back. */
  restored(node: RegionNode): void {
    this.#entries.push({ kind: "restored", node });
  }

  /** `mapping` was added to `node` while the host did not show it. */
  mappingAdded(node: RegionNode, mapping: RegionMapping): void {
    this.#entries.push({ kind: "mappingAdded", node, mapping });
  }

  /** `mappings` were removed from `node` while the host did not show it. */
  mappingsRemoved(node: RegionNode, mappings: readonly RegionMapping[]): void {
    this.#entries.push({ kind: "mappingsRemoved", node, mappings });
  }

  /** Forgets every change (the host has caught up with them). */
  clear(): void {
    this.#entries = [];
  }

  /**
   * Undoes every journaled change, newest first, through `undo` (mapping
   * lists directly), and forgets them: the tree is then as it was when the
   * journal was last cleared.
   */
  rewind(undo: JournalUndo): void {
    const entries = this.#entries;
    this.#entries = [];
    for (let i = entries.length - 1; i >= 0; i--) {
      const entry = entries[i];
      switch (entry.kind) {
        case "params":
          undo.setParams(entry.node, entry.old);
          break;
        case "added":
        case "restored":
          undo.remove(entry.node);
          break;
        case "removed":
          undo.restore(entry.node);
          if (entry.old !== undefined) undo.setParams(entry.node, entry.old);
          break;
        case "mappingAdded":
          entry.node.mappings.removeWithin(entry.mapping.range.start, entry.mapping.range.end);
          break;
        case "mappingsRemoved":
          for (const mapping of entry.mappings) entry.node.mappings.insert(mapping);
          break;
      }
    }
  }
}
