/**
 * Which rule a {@linkcode MemoryLayout} description broke:
 * - `"badSize"`: the RAM size is zero or not 4 KiB aligned (`invalid memory size`);
 * - `"badRanges"`: a range list is unsorted, holds an empty range, or ranges
 *   overlap (`invalid memory or MMIO ranges`);
 * - `"vtl2BelowRam"`: the VTL2 range starts below the end of RAM
 *   (`vtl2 range is below end of ram`).
 *
 * @example
 * ```ts
 * import type { MemoryLayoutErrorKind } from "./memory_layout_error.ts";
 * import assert from "node:assert/strict";
 * const kind: MemoryLayoutErrorKind = "badSize";
 * assert.equal(kind, "badSize");
 * ```
 */
export type MemoryLayoutErrorKind = MemoryLayoutError["kind"];

const MESSAGES: Readonly<Record<MemoryLayoutErrorKind, string>> = {
  badSize: "invalid memory size",
  badRanges: "invalid memory or MMIO ranges",
  vtl2BelowRam: "vtl2 range is below end of ram",
};

/**
 * A guest physical memory layout could not be built. The message is one of
 * `invalid memory size`, `invalid memory or MMIO ranges` or
 * `vtl2 range is below end of ram`, chosen by `kind`.
 *
 * @example
 * ```ts
 * import { MemoryLayoutError } from "./memory_layout_error.ts";
 * import assert from "node:assert/strict";
 * const err = new MemoryLayoutError("vtl2BelowRam");
 * assert.equal(err.kind, "vtl2BelowRam");
 * assert.equal(err.message, "vtl2 range is below end of ram");
 * ```
 */
export class MemoryLayoutError extends Error {
  /** The broken rule. */
  readonly kind: "badSize" | "badRanges" | "vtl2BelowRam";

  /** Creates the error for `kind`, with its fixed message. */
  constructor(kind: MemoryLayoutError["kind"]) {
    super(MESSAGES[kind]);
    this.name = "MemoryLayoutError";
    this.kind = kind;
  }
}
