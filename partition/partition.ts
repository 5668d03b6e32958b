/**
 * A guest physical address space that memory can be mapped into: a KVM VM,
 * a recording partition in tests, or anything else with these calls. One
 * region activation is one {@linkcode Partition.mapRange} of the whole region.
 *
 * @example
 * ```ts
 * import type { Partition } from "./partition.ts";
 * const log: string[] = [];
 * const partition: Partition = {
 *   mapRange: (_host, size, gpa) => void log.push(`map ${gpa} ${size}`),
 *   unmapRange: (gpa, size) => void log.push(`unmap ${gpa} ${size}`),
 * };
 * ```
 */
export interface Partition {
  /**
   * Maps `size` bytes of host memory at `hostAddress` at guest physical
   * address `gpa`, writable and executable as given.
   */
  mapRange(
    hostAddress: bigint,
    size: bigint,
    gpa: bigint,
    writable: boolean,
    executable: boolean,
  ): void;
  /** Unmaps everything mapped inside `[gpa, gpa + size)`. */
  unmapRange(gpa: bigint, size: bigint): void;
  /** Optional: faults in the host and guest page tables for the range ahead of use. */
  prefetchRange?(gpa: bigint, size: bigint): void;
  /** Optional: pins the range's host pages (e.g. for device assignment). */
  pinRange?(gpa: bigint, size: bigint): void;
}
