const UNITS: ReadonlyArray<readonly [bigint, string]> = [
  [1n << 40n, "TB"],
  [1n << 30n, "GB"],
  [1n << 20n, "MB"],
  [1n << 10n, "KB"],
];

/**
 * A byte count as shown in error messages: the largest of TB, GB, MB, KB
 * (powers of 1024) that divides it exactly, else plain bytes.
 *
 * @example
 * ```ts
 * import { MemorySize } from "./memory_size.ts";
 * import assert from "node:assert/strict";
 * assert.equal(`${new MemorySize(257n << 20n)}`, "257 MB");
 * assert.equal(`${new MemorySize(4097n)}`, "4097 bytes");
 * ```
 */
export class MemorySize {
  /** The size in bytes. */
  readonly bytes: bigint;

  /** Wraps `bytes` (a number is converted to bigint). */
  constructor(bytes: bigint | number) {
    this.bytes = BigInt(bytes);
  }

  /** `<n> TB|GB|MB|KB` or `<n> bytes`. */
  toString(): string {
    if (this.bytes !== 0n) {
      for (const [unit, suffix] of UNITS) {
        if (this.bytes % unit === 0n) return `${this.bytes / unit} ${suffix}`;
      }
    }
    return `${this.bytes} bytes`;
  }
}
