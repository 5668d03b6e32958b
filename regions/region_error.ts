/** Why a region operation was refused. */
export type RegionErrorKind =
  | "invalid-priority"
  | "outside-address-space"
  | "mapping-outside-region"
  | "mapping-overlap"
  | "mapping-unaligned-offset"
  | "mapping-past-backing-end"
  | "partial-removal"
  | "removed"
  | "reentrant";

/**
 * A region operation that the reference design asserts on is refused here
 * with this error instead: a mapping overlapping another in the same region,
 * a removal cutting through a mapping, use of a removed region, and similar.
 * Nothing is changed when it is thrown.
 *
 * @example
 * ```ts
 * import { RegionError } from "./region_error.ts";
 * const err = new RegionError("removed", "memory region vga has been removed");
 * console.log(err.kind); // removed
 * ```
 */
export class RegionError extends Error {
  /** What was wrong. */
  readonly kind: RegionErrorKind;

  /** Creates the error of `kind` with `message`. */
  constructor(kind: RegionErrorKind, message: string) {
    super(message);
    this.name = "RegionError";
    this.kind = kind;
  }
}
