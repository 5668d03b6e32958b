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
 *   separate calls, or as two batches of 13 calls when the manager (or its
 *   RAM visibility control) offers a batch of region changes (`batch`,
 *   `transaction`, `regionTransaction` taking a callback or returning a
 *   Disposable, or `beginTransaction`/`commitTransaction`: whichever exists,
 *   detected at run time, and checked once to apply the changes). Without
 *   such an API `pam_flip13_batched` is reported as skipped, and
 *   bench/run.ts says so. Target: the batched flip at least 2x faster.
 *
 * Run: deno run --allow-ffi --allow-read --allow-write --allow-env bench/pam_flip_bench.ts
 * (prints one JSON line per benchmark; see bench/bench_support.ts)
 *
 * @module
 */

import { KvmPartition } from "../kvm.ts";
import { GuestMemoryBuilder, MemoryLayout, RamVisibility, Vtl } from "../mod.ts";
import { bench, kvmAvailable, MIB, pamRanges, skip } from "./bench_support.ts";

const RAM = 16n * MIB;

/** Names a batch of region changes may have, on the manager or on the visibility control. */
const BATCH_NAMES = ["batch", "transaction", "regionTransaction", "batchRegionChanges"];

/**
 * The batch of region changes of `owners` (the manager, its RAM visibility
 * control), if one of them has one: runs `changes` so that they are applied
 * together at the end. Accepts a method taking a callback, one returning a
 * Disposable (`using tx = manager.transaction()`), or a begin/commit pair.
 */
function batchApi(owners: readonly object[]): ((changes: () => void) => void) | undefined {
  for (const owner of owners) {
    const o = owner as Record<string, unknown>;
    for (const name of BATCH_NAMES) {
      const fn = o[name];
      if (typeof fn !== "function") continue;
      return (changes) => {
        let ran = false;
        const result = fn.call(owner, () => {
          ran = true;
          changes();
        }) as Partial<Disposable> | undefined;
        if (ran) return;
        const dispose = result?.[Symbol.dispose];
        if (typeof dispose !== "function") {
          throw new Error(`${name}() neither ran the changes nor returned a Disposable`);
        }
        try {
          changes();
        } finally {
          dispose.call(result);
        }
      };
    }
    const begin = o.beginTransaction ?? o.beginBatch;
    const commit = o.commitTransaction ?? o.commitBatch ?? o.commit;
    if (typeof begin === "function" && typeof commit === "function") {
      return (changes) => {
        begin.call(owner);
        try {
          changes();
        } finally {
          commit.call(owner);
        }
      };
    }
  }
  return undefined;
}

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
  }, { samples: 60, budgetMs: 300 });

  const pieces = pam.slice(1);
  bench("pam_flip13_separate", () => {
    set(pieces, RamVisibility.ReadOnly);
    set(pieces, RamVisibility.ReadWrite);
  }, { samples: 60, budgetMs: 300 });
  const batch = batchApi([manager, control]);
  // The batch must really apply the changes: check once through GuestMemory.
  const memory = manager.client().guestMemory();
  const applies = (visibility: RamVisibility, writable: boolean) => {
    batch!(() => set(pieces, visibility));
    return pieces.every((range) => memory.isMapped(range.start, 4, true) === writable);
  };
  /** Why the batch found cannot be measured, or undefined when it works. */
  const broken = () => {
    try {
      return applies(RamVisibility.ReadOnly, false) && applies(RamVisibility.ReadWrite, true)
        ? undefined
        : "the batch API was found but did not apply the changes";
    } catch (error) {
      return `the batch API was found but failed: ${error}`;
    }
  };
  const problem = batch === undefined
    ? "GuestMemoryManager has no batch of region changes (batch/transaction) yet"
    : broken();
  if (batch === undefined || problem !== undefined) {
    skip("pam_flip13_batched", problem ?? "no batch API");
  } else {
    bench("pam_flip13_batched", () => {
      batch(() => set(pieces, RamVisibility.ReadOnly));
      batch(() => set(pieces, RamVisibility.ReadWrite));
    }, { samples: 60, budgetMs: 300 });
  }
}
