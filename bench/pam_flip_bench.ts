/**
 * Benchmark 2: PAM flips. A 16 MiB guest built with x86 legacy support and
 * attached to a KVM partition.
 *
 * - `pam_flip`: one operation sets all 14 PAM-controlled regions
 *   (0xa0000-0x100000) read-only, then all of them read-write again, through
 *   `RamVisibilityControl.setRamVisibility`. bench/baseline.c compares with
 *   `pam_flip` (the same 16 slots; each change a slot delete, a VA unmap, a VA
 *   map with the new protection and a slot create) and with `pam_flip_ioctl`
 *   (only the 28 slot delete+create pairs, host memory left mapped, as QEMU
 *   does).
 * - `pam_flip13_separate` / `pam_flip13_batched`: the 13 PAM pieces
 *   (0xc0000-0x100000, the VGA window left alone) read-only and back, as 26
 *   separate calls, or as two transactions of 13 calls
 *   (`manager.transaction()`). Target: the batched flip at least 2x faster.
 *
 * Run: deno run --allow-ffi --allow-read --allow-write --allow-env bench/pam_flip_bench.ts
 * (prints one JSON line per benchmark; see bench/bench_support.ts)
 *
 * @module
 */

import { KvmPartition } from "../kvm.ts";
import { GuestMemoryBuilder, MemoryLayout, RamVisibility, Vtl } from "../mod.ts";
import {
  bench,
  KVM_ROW_WARMUP_MS,
  KVM_WARMUP_MS,
  kvmAvailable,
  MIB,
  pamRanges,
  skip,
} from "./bench_support.ts";

const RAM = 16n * MIB;

if (!kvmAvailable()) {
  for (const name of ["pam_flip", "pam_flip13_separate", "pam_flip13_batched"]) {
    skip(name, "/dev/kvm is not available");
  }
} else {
  // Kept for the life of the bench process (released at exit).
  const manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
    MemoryLayout.fromGaps(RAM, []),
  );
  manager.attachPartition(Vtl.Vtl0, KvmPartition.create());
  const control = manager.ramVisibilityControl();
  const pam = pamRanges();
  const set = (ranges: typeof pam, visibility: RamVisibility) => {
    for (const range of ranges) control.setRamVisibility(range, visibility);
  };
  // Short runs: bench/run.ts alternates many such rounds with the C baseline.
  bench("pam_flip", () => {
    set(pam, RamVisibility.ReadOnly);
    set(pam, RamVisibility.ReadWrite);
  }, { samples: 60, budgetMs: 300, warmupMs: KVM_WARMUP_MS });

  const pieces = pam.slice(1);
  bench("pam_flip13_separate", () => {
    set(pieces, RamVisibility.ReadOnly);
    set(pieces, RamVisibility.ReadWrite);
  }, { samples: 60, budgetMs: 300, warmupMs: KVM_ROW_WARMUP_MS });
  // The same 26 changes as one transaction per direction.
  const batched = (visibility: RamVisibility) => {
    using _ = manager.transaction();
    set(pieces, visibility);
  };
  bench("pam_flip13_batched", () => {
    batched(RamVisibility.ReadOnly);
    batched(RamVisibility.ReadWrite);
  }, { samples: 60, budgetMs: 300, warmupMs: KVM_ROW_WARMUP_MS });
}
