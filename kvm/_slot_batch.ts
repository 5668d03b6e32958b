/**
 * The planning side of a {@linkcode KvmPartition} batch: ranges waiting to
 * become slots, how adjacent ones merge into one slot, and how a slot made
 * of several mapped ranges is cut back into the ranges it was made of.
 *
 * A slot that merges several mapped ranges remembers where they join
 * (`joins`, the inner boundaries), so that unmapping one of them later
 * deletes the slot and re-creates the rest: a caller always unmaps what it
 * mapped, never half of it.
 *
 * @module
 */

import type { RangeKeys } from "../collections/_sorted_range_list.ts";

/** A range waiting to become a slot (or part of one) at the batch's commit. */
export interface PendingSlot {
  /** Guest physical start. */
  readonly gpa: bigint;
  /** Guest physical end (exclusive). */
  readonly end: bigint;
  /** Host address of `gpa`. */
  readonly host: bigint;
  readonly writable: boolean;
  /** Inner boundaries of the mapped ranges it is made of, ascending. */
  readonly joins: readonly bigint[];
}

/** Pending slots keyed by their guest range. */
export const PENDING_KEYS: RangeKeys<PendingSlot> = {
  start: (p) => p.gpa,
  end: (p) => p.end,
};

/**
 * Merged slots stay at most this large: a later change of one of their
 * ranges deletes the whole slot, and the kernel's work to delete a slot
 * grows with its size (rmap, dirty bitmap, shadow pages). 2 MiB holds all
 * of the x86 legacy area (VGA window and PAM pieces, 384 KiB).
 */
export const MERGE_LIMIT = 2n << 20n;

/**
 * Merges `sorted` (ascending, disjoint) where one ends where the next
 * starts, both are equally writable, their host memory is contiguous and
 * the result stays within {@linkcode MERGE_LIMIT}.
 */
export function mergeAdjacent(sorted: readonly PendingSlot[]): PendingSlot[] {
  const out: PendingSlot[] = [];
  for (const next of sorted) {
    const last = out[out.length - 1];
    if (
      last !== undefined && last.end === next.gpa && last.writable === next.writable &&
      last.host + (last.end - last.gpa) === next.host && next.end - last.gpa <= MERGE_LIMIT
    ) {
      out[out.length - 1] = {
        gpa: last.gpa,
        end: next.end,
        host: last.host,
        writable: last.writable,
        joins: [...last.joins, last.end, ...next.joins],
      };
    } else out.push(next);
  }
  return out;
}

/**
 * What remains of `slot` once `[start, end)` is taken out of it: the part
 * before and the part after (either may be missing), each with the joins
 * inside it. `undefined` when a cut would split one of the mapped ranges
 * the slot is made of (the caller refuses the unmap then).
 */
export function cutOut(slot: PendingSlot, start: bigint, end: bigint): PendingSlot[] | undefined {
  const lo = start > slot.gpa ? start : slot.gpa;
  const hi = end < slot.end ? end : slot.end;
  const isBoundary = (at: bigint) => at === slot.gpa || at === slot.end || slot.joins.includes(at);
  if (!isBoundary(lo) || !isBoundary(hi)) return undefined;
  const out: PendingSlot[] = [];
  if (lo > slot.gpa) {
    out.push({
      gpa: slot.gpa,
      end: lo,
      host: slot.host,
      writable: slot.writable,
      joins: slot.joins.filter((j) => j < lo),
    });
  }
  if (hi < slot.end) {
    out.push({
      gpa: hi,
      end: slot.end,
      host: slot.host + (hi - slot.gpa),
      writable: slot.writable,
      joins: slot.joins.filter((j) => j > hi),
    });
  }
  return out;
}

/** Whether two join lists are the same. */
export function sameJoins(a: readonly bigint[], b: readonly bigint[]): boolean {
  return a.length === b.length && a.every((j, i) => j === b[i]);
}
