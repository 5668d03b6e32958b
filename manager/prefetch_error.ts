import type { MemoryRange } from "../layout/memory_range.ts";

/**
 * `GuestMemoryManager.prefetch()` could not populate a range of RAM:
 * `failed to prefetch guest RAM {range} ({advice})`, with the OS error (a
 * `SyscallError` of `madvise`) as `cause`. `range` is the guest range of the
 * live host range whose population failed. Nothing is left behind: every
 * other range finished (or failed) before the promise was rejected, and
 * pages populated so far just stay populated.
 *
 * @example
 * ```ts
 * import { PrefetchError } from "./prefetch_error.ts";
 * import { MemoryRange } from "../layout/memory_range.ts";
 * import assert from "node:assert/strict";
 * const err = new PrefetchError({
 *   kind: "populate",
 *   range: new MemoryRange(0n, 0x400000n),
 *   advice: "MADV_POPULATE_WRITE",
 * });
 * assert.equal(err.kind, "populate");
 * assert.equal(err.message, "failed to prefetch guest RAM 0x0-0x400000 (MADV_POPULATE_WRITE)");
 * ```
 */
export class PrefetchError extends Error {
  /** Always `populate`. */
  readonly kind: PrefetchError["detail"]["kind"];
  /** The range that failed and the advice it was given. */
  readonly detail: {
    readonly kind: "populate";
    readonly range: MemoryRange;
    readonly advice: "MADV_POPULATE_WRITE" | "MADV_POPULATE_READ";
  };

  /**
   * Creates the error for `detail`.
   *
   * @param detail The range and the advice.
   * @param options `cause`: the OS error.
   */
  constructor(detail: PrefetchError["detail"], options?: ErrorOptions) {
    super(`failed to prefetch guest RAM ${detail.range} (${detail.advice})`, options);
    this.name = "PrefetchError";
    this.kind = detail.kind;
    this.detail = detail;
  }
}
