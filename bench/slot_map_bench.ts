/**
 * Benchmark 1: memory-slot map throughput through the whole stack. A guest
 * whose RAM has a 2 MiB range of its own at 16 MiB, attached to a KVM
 * partition; one operation hides that RAM region and shows it again
 * (`setRamVisibility` Unmapped, then ReadWrite): a slot delete, a VA unmap,
 * a VA map and a slot create. bench/baseline.c `slot_map` makes the same
 * four syscalls.
 *
 * Run: deno run --allow-ffi --allow-read --allow-write --allow-env bench/slot_map_bench.ts
 * (prints one JSON line per benchmark; see bench/bench_support.ts)
 *
 * @module
 */

import { KvmPartition } from "../kvm.ts";
import { GuestMemoryBuilder, MemoryLayout, MemoryRange, RamVisibility, Vtl } from "../mod.ts";
import { bench, KVM_WARMUP_MS, MIB, skip, skipWithoutKvm } from "./bench_support.ts";

const SLOT = new MemoryRange(16n * MIB, 18n * MIB);
if (skipWithoutKvm("slot_map")) {
  skip("slot_map", "/dev/kvm is not available");
} else {
  // Kept for the life of the bench process (released at exit).
  const manager = new GuestMemoryBuilder().build(
    MemoryLayout.fromRanges([new MemoryRange(0n, SLOT.start), SLOT], []),
  );
  manager.attachPartition(Vtl.Vtl0, KvmPartition.create());
  const control = manager.ramVisibilityControl();
  // Short runs: bench/run.ts alternates many such rounds with the C baseline.
  bench("slot_map", () => {
    control.setRamVisibility(SLOT, RamVisibility.Unmapped);
    control.setRamVisibility(SLOT, RamVisibility.ReadWrite);
  }, { samples: 300, warmupMs: KVM_WARMUP_MS });
}
