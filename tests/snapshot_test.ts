import assert from "node:assert/strict";
import {
  GuestMemoryBuilder,
  GuestMemoryClient,
  type GuestMemoryManager,
  MemoryLayout,
  MemoryRange,
  RamVisibility,
} from "../mod.ts";
import { GuestRamSnapshot, SnapshotError } from "../snapshot.ts";
import { openFdCount, skipWithoutHugetlb } from "./support/requirements.ts";

const MiB = 1n << 20n;
const VGA = new MemoryRange(0xa0000n, 0xc0000n);

function fillPattern(manager: GuestMemoryManager, size: bigint, salt: number): void {
  const words = new Uint32Array(Number(size / 4n));
  for (let i = 0; i < words.length; i++) words[i] = (Math.imul(i, 0x9e3779b1) ^ salt) >>> 0;
  manager.client().guestMemory().write(0n, new Uint8Array(words.buffer));
}

function snapshotError(kind: SnapshotError["kind"]) {
  return (err: unknown) => err instanceof SnapshotError && err.kind === kind;
}

for (
  const mode of [
    { name: "shared", build: () => new GuestMemoryBuilder() },
    { name: "private", build: () => new GuestMemoryBuilder().privateMemory(true) },
    { name: "hugetlb", build: () => new GuestMemoryBuilder().hugepages() },
  ] as const
) {
  Deno.test({
    name: `snapshot of ${mode.name} RAM: full and incremental restore`,
    ignore: mode.name === "hugetlb" && skipWithoutHugetlb(),
    fn: () => {
      const fds = openFdCount();
      const size = 8n * MiB;
      {
        using manager = mode.build().build(MemoryLayout.fromGaps(size, []));
        const memory = manager.client().guestMemory();
        fillPattern(manager, size, 1);
        const original = memory.readBytes(0n, size);
        using snapshot = GuestRamSnapshot.take(manager);
        assert.equal(snapshot.memoryMode, mode.name);
        assert.equal(snapshot.size, size);
        assert.deepEqual(snapshot.read(0x1000n, 4), original.subarray(0x1000, 0x1004));

        // Full restore, tracking off.
        fillPattern(manager, size, 2);
        snapshot.restore(manager);
        assert.deepEqual(memory.readBytes(0n, size), original);
        assert.throws(() => snapshot.restoreDirty(manager), snapshotError("notTracking"));

        // Incremental: only the pages written since are copied.
        const tracker = manager.dirtyTracker();
        tracker.start();
        assert.throws(() => snapshot.restoreDirty(manager), snapshotError("notTracking"));
        snapshot.restore(manager); // the tracker's point is this snapshot now
        memory.writeU64(0x2008n, 1n);
        memory.fill(0x7ff000n, 0x1000n, 0);
        assert.deepEqual(tracker.dirtyPages(), [0x2000n, 0x7ff000n]);
        assert.equal(snapshot.restoreDirty(manager), 2);
        assert.deepEqual(memory.readBytes(0n, size), original);
        assert.deepEqual(tracker.dirtyPages(), []);

        // A reset (a new point) makes the snapshot's diff unknown.
        tracker.reset();
        assert.throws(() => snapshot.restoreDirty(manager), snapshotError("stalePoint"));
        tracker.stop();
      }
      assert.equal(openFdCount(), fds);
    },
  });
}

Deno.test("snapshot records RAM visibility and device regions, and restores the view", () => {
  using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
    MemoryLayout.fromGaps(2n * MiB, []),
  );
  const control = manager.ramVisibilityControl();
  const vram = manager.deviceMemoryMapper().newRegion(VGA.len, "vga");
  using _control = vram.control;
  vram.control.mapToGuest(VGA.start, true);
  control.setRamVisibility(VGA, RamVisibility.Unmapped);
  control.setRamVisibility(new MemoryRange(0xf0000n, 0x100000n), RamVisibility.ReadOnly);
  using snapshot = GuestRamSnapshot.take(manager);
  assert.equal(snapshot.pieces.length, 16);
  assert.deepEqual(
    snapshot.pieces.filter((p) => p.visibility !== RamVisibility.ReadWrite).map((p) => [
      `${p.range}`,
      p.visibility,
    ]),
    [["0xa0000-0xc0000", "unmapped"], ["0xf0000-0x100000", "read-only"]],
  );
  assert.deepEqual(snapshot.deviceRegions.map((r) => ({ ...r, range: `${r.range}` })), [{
    name: "vga",
    range: "0xa0000-0xc0000",
    priority: 0,
    mapped: true,
    writable: true,
    visible: true,
  }]);
  control.setRamVisibility(VGA, RamVisibility.ReadWrite);
  control.setRamVisibility(new MemoryRange(0xf0000n, 0x100000n), RamVisibility.ReadWrite);
  const memory = manager.client().guestMemory();
  snapshot.restore(manager);
  assert.equal(memory.isMapped(VGA.start, 4), false); // the device region shows, unbacked
  assert.equal(memory.isMapped(0xf0000n, 4), true);
  assert.equal(memory.isMapped(0xf0000n, 4, true), false);
});

Deno.test("a snapshot seeds a new manager through existingBacking, and stays as it was", () => {
  const layout = MemoryLayout.fromGaps(4n * MiB, []);
  using first = new GuestMemoryBuilder().x86LegacySupport(true).build(layout);
  fillPattern(first, 4n * MiB, 3);
  first.ramVisibilityControl().setRamVisibility(
    new MemoryRange(0xc0000n, 0xc4000n),
    RamVisibility.ReadOnly,
  );
  using snapshot = GuestRamSnapshot.take(first);
  using backing = snapshot.toBacking();
  using second = new GuestMemoryBuilder().x86LegacySupport(true).existingBacking(backing).build(
    layout,
  );
  snapshot.restoreVisibility(second);
  const a = first.client().guestMemory();
  const b = second.client().guestMemory();
  assert.deepEqual(b.readBytes(0n, 4n * MiB), a.readBytes(0n, 4n * MiB));
  assert.equal(b.isMapped(0xc0000n, 4, true), false);
  b.writeU32(0x1000n, 0xfeedface);
  assert.notEqual(snapshot.read(0x1000n, 4)[0], 0xce);
  assert.notEqual(a.readU32(0x1000n), 0xfeedface);
});

Deno.test("restoring into other RAM is refused and changes nothing", () => {
  using small = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(2n * MiB, []));
  using large = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(4n * MiB, []));
  large.client().guestMemory().writeU8(0n, 5);
  using snapshot = GuestRamSnapshot.take(small);
  assert.throws(
    () => snapshot.restore(large),
    (err: unknown) =>
      err instanceof SnapshotError && err.kind === "layoutMismatch" &&
      err.message ===
        "a snapshot of RAM 0x0-0x200000 cannot be restored into RAM 0x0-0x400000",
  );
  assert.equal(large.client().guestMemory().readU8(0n), 5);
  snapshot[Symbol.dispose]();
  assert.throws(() => snapshot.read(0n, 1), /guest RAM snapshot has been disposed/);
});

Deno.test("an incremental restore into another manager with the same RAM is refused", () => {
  using a = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(2n * MiB, []));
  using b = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(2n * MiB, []));
  a.dirtyTracker().start();
  using snapshot = GuestRamSnapshot.take(a);
  // As many points on b as on a: numbers per tracker would match here.
  b.dirtyTracker().start();
  b.dirtyTracker().reset();
  const memory = b.client().guestMemory();
  memory.writeU8(0x1000n, 7);
  const point = b.dirtyTracker().point;
  const snapshotPoint = a.dirtyTracker().point;
  assert.notEqual(point, snapshotPoint);
  assert.throws(
    () => snapshot.restoreDirty(b),
    (err: unknown) =>
      err instanceof SnapshotError && err.kind === "stalePoint" &&
      err.message ===
        `the dirty tracker was reset after this snapshot was taken (point ${point}, snapshot at ${snapshotPoint})`,
  );
  assert.equal(memory.readU8(0x1000n), 7);
  assert.deepEqual(b.dirtyTracker().dirtyPages(), [0x1000n]);
  assert.equal(snapshot.restoreDirty(a), 0);
});

Deno.test("writes through a shared client (as a Worker makes them) are tracked", () => {
  using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(2n * MiB, []));
  const tracker = manager.dirtyTracker();
  const share = manager.client().share();
  assert.ok(share.dirty instanceof SharedArrayBuffer);
  using worker = GuestMemoryClient.fromShare(share, { name: "test" }).guestMemory();
  worker.writeU32(0x5000, 1); // before start: not tracked
  tracker.start();
  worker.writeU32(0x6000, 1);
  worker.compareExchange32(0x7000, 0, 1); // exchanged: a write
  worker.compareExchange32(0x8000, 5, 1); // not exchanged: no write
  assert.deepEqual(tracker.dirtyPages(), [0x6000n, 0x7000n]);
  tracker.stop();
  worker.writeU32(0x9000, 1); // after stop: not tracked
  assert.deepEqual(tracker.dirtyPages(), [0x6000n, 0x7000n]);
  // A share from before this field existed still works, untracked.
  const { dirty: _, ...old } = share;
  using legacy = GuestMemoryClient.fromShare(old).guestMemory();
  tracker.start();
  legacy.writeU8(0xa000, 1);
  assert.deepEqual(tracker.dirtyPages(), []);
});

Deno.test("a failed write marks nothing", () => {
  using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
    MemoryLayout.fromGaps(2n * MiB, []),
  );
  const tracker = manager.dirtyTracker();
  tracker.start();
  manager.ramVisibilityControl().setRamVisibility(VGA, RamVisibility.ReadOnly);
  const memory = manager.client().guestMemory();
  assert.throws(() => memory.write(VGA.start - 4n, new Uint8Array(8)));
  assert.deepEqual(tracker.dirtyPages(), []);
});

Deno.test("writes from a Worker are tracked and restored", async () => {
  using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(8n * MiB, []));
  const memory = manager.client().guestMemory();
  const tracker = manager.dirtyTracker();
  const share = manager.client().share();
  tracker.start();
  using snapshot = GuestRamSnapshot.take(manager);
  const addresses = [0x1004, 0x20ffc, 0x7ff000, 0x400000];
  const worker = new Worker(new URL("./support/dirty_worker.ts", import.meta.url), {
    type: "module",
  });
  try {
    const done = new Promise<void>((resolve, reject) => {
      worker.onmessage = () => resolve();
      worker.onerror = (e) => reject(new Error(e.message));
    });
    worker.postMessage({ client: share, addresses });
    await done;
  } finally {
    worker.terminate();
  }
  memory.writeU8(0x30000, 1); // and one from the main thread
  assert.deepEqual(tracker.dirtyPages(), [0x1000n, 0x20000n, 0x30000n, 0x400000n, 0x7ff000n]);
  assert.equal(snapshot.restoreDirty(manager), 5);
  assert.equal(memory.readU32(0x400000), 0);
  tracker.stop();
});
