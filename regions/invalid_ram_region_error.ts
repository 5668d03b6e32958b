import type { MemoryRange } from "../layout/memory_range.ts";

/**
 * {@linkcode RamVisibilityControl.setRamVisibility} was given a range that is
 * not exactly one RAM region: `{range} is not a controllable RAM range`.
 *
 * @example
 * ```ts
 * import { InvalidRamRegionError } from "./invalid_ram_region_error.ts";
 * import { MemoryRange } from "../layout/memory_range.ts";
 * const err = new InvalidRamRegionError(new MemoryRange(0xc0000n, 0xc8000n));
 * console.log(err.message); // 0xc0000-0xc8000 is not a controllable RAM range
 * ```
 */
export class InvalidRamRegionError extends Error {
  /** Always `invalid-ram-range`. */
  readonly kind: "invalid-ram-range" = "invalid-ram-range";
  /** The range asked for. */
  readonly range: MemoryRange;

  /** Creates the error for `range`. */
  constructor(range: MemoryRange) {
    super(`${range} is not a controllable RAM range`);
    this.name = "InvalidRamRegionError";
    this.range = range;
  }
}
