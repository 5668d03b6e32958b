/**
 * Helpers shared by the benchmark files (not part of the library).
 *
 * @module
 */

import { KvmSystem } from "../kvm.ts";
import { MemoryRange } from "../mod.ts";

/** Whether /dev/kvm can be opened read-write (KVM benchmarks are skipped otherwise). */
export function kvmAvailable(): boolean {
  try {
    KvmSystem.open()[Symbol.dispose]();
    return true;
  } catch {
    return false;
  }
}

/** A KVM benchmark's `ignore` value: skipped without KVM, with a note on stderr. */
export function skipWithoutKvm(what: string): boolean {
  if (kvmAvailable()) return false;
  console.error(`skipping ${what}: /dev/kvm is not available`);
  return true;
}

/** 1 MiB. */
export const MIB = 1n << 20n;

/** 1 GiB. */
export const GIB = 1n << 30n;

/**
 * The regions x86 legacy support lets `RamVisibilityControl` flip in the
 * first MiB: the VGA window, twelve 16 KiB PAM pieces and the 64 KiB BIOS
 * piece.
 */
export function pamRanges(): MemoryRange[] {
  const ranges = [new MemoryRange(0xa0000n, 0xc0000n)];
  for (let start = 0xc0000n; start < 0xf0000n; start += 0x4000n) {
    ranges.push(new MemoryRange(start, start + 0x4000n));
  }
  ranges.push(new MemoryRange(0xf0000n, 0x100000n));
  return ranges;
}
