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
  /**
   * Optional, with the next two: logs the pages the guest writes (KVM:
   * `KVM_MEM_LOG_DIRTY_PAGES` on every writable slot, kept across slot
   * changes). A manager's dirty tracker turns it on and off.
   */
  startDirtyLogging?(): void;
  /** Optional: stops logging, keeping what was logged for the next `takeDirtyLog`. */
  stopDirtyLogging?(): void;
  /**
   * Optional: reports and forgets the pages written since the last call:
   * bit i of `words` (little-endian) is the page at `gpa + 4096 i`, for
   * `pages` pages.
   */
  takeDirtyLog?(visit: (gpa: bigint, words: Uint32Array, pages: number) => void): void;
  /**
   * Optional, with the next two: starts a batch, in which `mapRange` and
   * `unmapRange` may only be recorded (checked as usual) and applied at
   * `commitBatch` as fewer changes (KVM: merged slots). Returns false when
   * it does not start one (calls then apply at once).
   */
  beginBatch?(): boolean;
  /** Optional: applies the open batch, all or nothing (on failure, as before the batch). */
  commitBatch?(): void;
  /** Optional: forgets the open batch. */
  abortBatch?(): void;
  /**
   * Optional: undoes the last committed batch exactly, if nothing it made
   * has changed since; returns whether it did.
   */
  revertBatch?(): boolean;
}
