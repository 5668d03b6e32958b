/**
 * Benchmark 7: dirty tracking and snapshots of 1 GiB of shared guest RAM,
 * attached to a KVM partition with dirty logging on.
 *
 * - `dirty_log_read_1g`: `DirtyTracker.dirtyPages()` with nothing dirty:
 *   `KVM_GET_DIRTY_LOG` of the 1 GiB slot, the scan of its bitmap and of
 *   the host bitmap. C: the ioctl and the scan of its bitmap.
 * - `restore_dirty_1000`: `GuestRamSnapshot.restoreDirty` after the host
 *   wrote 1,000 pages spread over the 1 GiB (the writes are outside the
 *   timing): collecting the dirty set, copying the pages back, the new
 *   point. C: `memcpy` of the same 1,000 pages from a mapped snapshot.
 * - `restore_full_1g`: `GuestRamSnapshot.restore` (`copy_file_range` of
 *   1 GiB): what the incremental restore is compared with (target: 20x).
 * - `snapshot_1g`: `GuestRamSnapshot.take` and dispose. C: memfd_create,
 *   ftruncate, `copy_file_range` of 1 GiB, seals, close.
 *
 * @module
 */

import { KvmPartition } from "../kvm.ts";
import { GuestMemoryBuilder, MemoryLayout, Vtl } from "../mod.ts";
import { GuestRamSnapshot } from "../snapshot.ts";
import { bench, GIB, KVM_WARMUP_MS, kvmAvailable, skip } from "./bench_support.ts";

const NAMES = ["dirty_log_read_1g", "restore_dirty_1000", "restore_full_1g", "snapshot_1g"];
const PAGES = Number(GIB / 4096n);
/** The 1,000 dirty pages: `(i * 104729 + 7) mod 2^18`, distinct and spread (as in baseline.c). */
const DIRTY = Array.from({ length: 1000 }, (_, i) => ((i * 104729 + 7) % PAGES) * 4096);

if (!kvmAvailable()) {
  for (const name of NAMES) skip(name, "/dev/kvm is not available");
} else {
  // Kept for the life of the bench process (released at exit).
  const manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(GIB, []));
  const memory = manager.client().guestMemory();
  memory.fill(0n, GIB, 0x5a); // every page resident before timing
  manager.attachPartition(Vtl.Vtl0, KvmPartition.create());
  const tracker = manager.dirtyTracker();
  tracker.start();
  const snapshot = GuestRamSnapshot.take(manager);

  // A KVM ioctl per sample: warmed up like the slot rows (see KVM_WARMUP_MS).
  bench("dirty_log_read_1g", () => tracker.dirtyPages().length, {
    samples: 100,
    budgetMs: 300,
    warmupMs: KVM_WARMUP_MS,
  });
  // The host writes the pages outside the timing: the sample times only the restore.
  // Warmed up for 500 ms (about 2,000 restores): the first hundred restores
  // of a process take twice as long while V8 compiles the copy and
  // bookkeeping loops, and 30 samples after the default 20 ms timed mostly that.
  bench("restore_dirty_1000", () => {
    for (const gpa of DIRTY) memory.writeU8(gpa, 1);
    const t0 = performance.now();
    snapshot.restoreDirty(manager);
    return (performance.now() - t0) * 1e6;
  }, { selfTimed: true, batch: 1, samples: 30, budgetMs: 300, warmupMs: 500 });
  const slow = { batch: 1, samples: 3, minSamples: 3, budgetMs: 0, warmupMs: 0 };
  bench("restore_full_1g", () => snapshot.restore(manager), slow);
  bench("snapshot_1g", () => {
    using copy = GuestRamSnapshot.take(manager);
    return copy.size;
  }, slow);
}
