/**
 * Benchmark 2c: does merging a transaction's adjacent ranges into one KVM
 * slot pay? The 13 PAM pieces (0xc0000-0x100000) flipped read-only and
 * back in two transactions, by a partition that merges (`mergeSlots`, the
 * default: after the first flip the pieces share one slot, and each
 * transaction deletes one slot and creates one) against one that keeps a
 * slot per piece (each transaction deletes and creates 13), on a 16 MiB
 * and a 4 GiB guest (RAM written by the host first, so resident). And the
 * price of merging: the same batched flip followed by 13 separate flips
 * (the first separate change of a merged slot deletes it and re-creates
 * the rest).
 *
 * - `merge_batched_16m` / `merge_batched_16m_off`, `merge_batched_4g` /
 *   `merge_batched_4g_off`: RO and RW, one transaction each.
 * - `merge_mixed_16m` / `merge_mixed_16m_off`: one transaction to RO, then
 *   13 separate calls back to RW.
 *
 * Run: deno run --allow-ffi --allow-read --allow-write --allow-env bench/slot_merge_bench.ts
 * (prints one JSON line per benchmark; see bench/bench_support.ts)
 *
 * @module
 */

import { KvmPartition } from "../kvm.ts";
import { GuestMemoryBuilder, MemoryLayout, RamVisibility, Vtl } from "../mod.ts";
import type { GuestMemoryManager } from "../mod.ts";
import {
  bench,
  GIB,
  KVM_ROW_WARMUP_MS,
  KVM_WARMUP_MS,
  kvmAvailable,
  MIB,
  pamRanges,
  skip,
} from "./bench_support.ts";

const NAMES = [
  "merge_batched_16m",
  "merge_batched_16m_off",
  "merge_batched_4g",
  "merge_batched_4g_off",
  "merge_mixed_16m",
  "merge_mixed_16m_off",
];

/** A guest of `ram` bytes with x86 legacy support in a KVM partition merging or not. */
function guest(ram: bigint, merge: boolean): GuestMemoryManager {
  const manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
    MemoryLayout.fromGaps(ram, []),
  );
  manager.client().guestMemory().fill(0n, ram, 1);
  manager.attachPartition(Vtl.Vtl0, KvmPartition.create({ mergeSlots: merge }));
  return manager;
}

if (!kvmAvailable()) {
  for (const name of NAMES) skip(name, "/dev/kvm is not available");
} else {
  const pieces = pamRanges().slice(1);
  const options = { samples: 60, budgetMs: 300 };
  let first = true;
  // Kept for the life of the bench process (released at exit).
  for (const [label, ram] of [["16m", 16n * MIB], ["4g", 4n * GIB]] as const) {
    for (const merge of [true, false]) {
      const manager = guest(ram, merge);
      const control = manager.ramVisibilityControl();
      const batched = (visibility: RamVisibility) => {
        using _ = manager.transaction();
        for (const range of pieces) control.setRamVisibility(range, visibility);
      };
      const suffix = merge ? "" : "_off";
      bench(`merge_batched_${label}${suffix}`, () => {
        batched(RamVisibility.ReadOnly);
        batched(RamVisibility.ReadWrite);
      }, { ...options, warmupMs: first ? KVM_WARMUP_MS : KVM_ROW_WARMUP_MS });
      first = false;
      if (label === "16m") {
        bench(`merge_mixed_16m${suffix}`, () => {
          batched(RamVisibility.ReadOnly);
          for (const range of pieces) control.setRamVisibility(range, RamVisibility.ReadWrite);
        }, { ...options, warmupMs: KVM_ROW_WARMUP_MS });
      }
    }
  }
}
