/**
 * A new region breaks the nesting rule against an existing one: `memory
 * region {new} overlaps with existing region {existing}`. The existing
 * region named is the first offending one in the order regions were added.
 *
 * @example
 * ```ts
 * import { RegionOverlapError } from "./region_overlap_error.ts";
 * const err = new RegionOverlapError("rom", "ram");
 * console.log(err.message); // memory region rom overlaps with existing region ram
 * ```
 */
export class RegionOverlapError extends Error {
  /** Always `overlap`. */
  readonly kind: "overlap" = "overlap";
  /** Name of the region that was refused. */
  readonly newName: string;
  /** Name of the existing region it conflicts with. */
  readonly existingName: string;

  /** Creates the error for `newName` conflicting with `existingName`. */
  constructor(newName: string, existingName: string) {
    super(`memory region ${newName} overlaps with existing region ${existingName}`);
    this.name = "RegionOverlapError";
    this.newName = newName;
    this.existingName = existingName;
  }
}
