/**
 * How a region is mapped: guest write and execute access, and prefetch.
 *
 * @example
 * ```ts
 * import type { MapParams } from "./_map_params.ts";
 * const ram: MapParams = { writable: true, executable: true, prefetch: false };
 * console.log(ram.writable);
 * ```
 */
export interface MapParams {
  /** Guest may write. */
  readonly writable: boolean;
  /** Guest may execute. */
  readonly executable: boolean;
  /** Fault the range in ahead of use (failures only warn). */
  readonly prefetch: boolean;
}
