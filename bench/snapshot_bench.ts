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
import { GIB, skipWithoutKvm } from "./bench_support.ts";

const ignore = skipWithoutKvm("snapshot");
const PAGES = Number(GIB / 4096n);
/** The 1,000 dirty pages: `(i * 104729 + 7) mod 2^18`, distinct and spread (as in baseline.c). */
const DIRTY = Array.from({ length: 1000 }, (_, i) => ((i * 104729 + 7) % PAGES) * 4096);

const manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(GIB, []));
const memory = manager.client().guestMemory();
memory.fill(0n, GIB, 0x5a); // every page resident before timing
const partition = ignore ? undefined : KvmPartition.create();
if (partition !== undefined) manager.attachPartition(Vtl.Vtl0, partition);
const tracker = manager.dirtyTracker();
tracker.start();
const snapshot = GuestRamSnapshot.take(manager);

/** Results land here so the JIT cannot drop them. */
export let sink = 0;

Deno.bench({
  name: "dirty_log_read_1g",
  group: "snapshot",
  ignore,
  fn() {
    sink += tracker.dirtyPages().length;
  },
});

Deno.bench({
  name: "restore_dirty_1000",
  group: "snapshot",
  ignore,
  fn(b) {
    for (const gpa of DIRTY) memory.writeU8(gpa, 1);
    b.start();
    sink += snapshot.restoreDirty(manager);
    b.end();
  },
});

Deno.bench({
  name: "restore_full_1g",
  group: "snapshot",
  ignore,
  n: 5,
  warmup: 1,
  fn() {
    snapshot.restore(manager);
  },
});

Deno.bench({
  name: "snapshot_1g",
  group: "snapshot",
  ignore,
  n: 5,
  warmup: 1,
  fn() {
    using copy = GuestRamSnapshot.take(manager);
    sink += Number(copy.size & 1n);
  },
});
