import { MemoryRange } from "../layout/memory_range.ts";

/** Where the pieces of the first RAM range start (the last one runs to its end). */
const LEGACY_STARTS: readonly bigint[] = [
  0x0n,
  0xa0000n, // VGA window
  0xc0000n, // twelve 16 KiB PAM pieces from here...
  0xc4000n,
  0xc8000n,
  0xcc000n,
  0xd0000n,
  0xd4000n,
  0xd8000n,
  0xdc000n,
  0xe0000n,
  0xe4000n,
  0xe8000n,
  0xec000n,
  0xf0000n, // ...then the 64 KiB BIOS piece
  0x100000n,
];

/** Lowest end the first RAM range may have for x86 legacy splitting. */
export const X86_LEGACY_MIN_END: bigint = 0x100000n;

/**
 * Splits the first RAM range for x86 legacy support into 16 consecutive
 * ranges (the reference's 17 boundaries; SPEC.md's "17 regions" counts the
 * boundaries, its own list of pieces has 16), so that the VGA window and each PAM-controlled piece of the BIOS
 * area can be made visible, read-only or hidden on its own:
 * `0x0-0xa0000`, `0xa0000-0xc0000`, twelve 16 KiB pieces `0xc0000` ...
 * `0xec000`, `0xf0000-0x100000` and `0x100000-<end>` (empty when the range
 * ends at exactly 1 MiB).
 *
 * Throws a `RangeError` (`x86 support requires RAM to start at 0 and contain
 * at least 1MB`) when `first` does not start at 0 or ends below 1 MiB.
 *
 * @example
 * ```ts
 * import { splitX86LegacyRam } from "./_x86_legacy.ts";
 * import { MemoryRange } from "../layout/memory_range.ts";
 * const pieces = splitX86LegacyRam(new MemoryRange(0n, 0x40000000n));
 * console.log(pieces.length, `${pieces[1]}`); // 16 0xa0000-0xc0000
 * ```
 */
export function splitX86LegacyRam(first: MemoryRange): MemoryRange[] {
  if (first.start !== 0n || first.end < X86_LEGACY_MIN_END) {
    throw new RangeError("x86 support requires RAM to start at 0 and contain at least 1MB");
  }
  const bounds = [...LEGACY_STARTS, first.end];
  const pieces: MemoryRange[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    pieces.push(new MemoryRange(bounds[i], bounds[i + 1]));
  }
  return pieces;
}
