/**
 * Dirty page tracking and snapshots of guest RAM for membacking.
 *
 * {@linkcode DirtyTracker} (from `GuestMemoryManager.dirtyTracker()`) says
 * which pages of guest memory changed since a point, whoever wrote them:
 * guests (KVM dirty logging on every attached `KvmPartition`, kept across
 * slot changes) and the host (every write through `GuestMemory`, on any
 * thread). {@linkcode GuestRamSnapshot} copies RAM into a sealed memfd with
 * each RAM region's visibility and the device regions as metadata, and
 * restores it in full or only the pages changed since (a test harness's
 * "reset the guest to a checkpoint"), or seeds a new manager.
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, MemoryLayout } from "./mod.ts";
 * import { GuestRamSnapshot } from "./snapshot.ts";
 * import assert from "node:assert/strict";
 *
 * using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(2n << 20n, []));
 * const memory = manager.client().guestMemory();
 * manager.dirtyTracker().start();
 * using checkpoint = GuestRamSnapshot.take(manager);
 * memory.writeU64(0x8000, 42n);
 * assert.deepEqual(manager.dirtyTracker().dirtyPages(), [0x8000n]);
 * assert.equal(checkpoint.restoreDirty(manager), 1);
 * assert.equal(memory.readU64(0x8000), 0n);
 * ```
 *
 * @module
 */

export { DirtyTracker } from "./snapshot/dirty_tracker.ts";
export {
  GuestRamSnapshot,
  type SnapshotDeviceRegion,
  type SnapshotMemoryMode,
  type SnapshotRamPiece,
} from "./snapshot/guest_ram_snapshot.ts";
export { SnapshotError } from "./snapshot/snapshot_error.ts";
