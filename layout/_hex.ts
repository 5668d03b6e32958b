/**
 * The one hex formatter of the library: addresses, sizes and offsets in
 * messages and inspection trees.
 *
 * @module
 */

/** `value` in lower-case hex with a `0x` prefix (`-0x10` for negative values). */
export function hex(value: bigint | number): string {
  if (typeof value === "number") value = BigInt(value);
  return value < 0n ? `-0x${(-value).toString(16)}` : `0x${value.toString(16)}`;
}
