/**
 * The copy path of incremental restores (`GuestRamSnapshot.restoreDirty`):
 * exact contents for every memory mode and for pieces whose visibility
 * changed, runs across bitmap words and longer than one copy, another
 * manager restored from the same snapshot, what a failure leaves, and that
 * disposal gives every mapping and fd back (a snapshot never holds on to a
 * manager's RAM).
 */
import assert from "node:assert/strict";
import { Errno } from "../ffi/_errno.ts";
import { arm, disarm } from "../ffi/_fault_injection.ts";
import { liveHostMappingCount } from "../ffi/_host_mapping.ts";
import {
  GuestMemoryBuilder,
  type GuestMemoryManager,
  MemoryLayout,
  MemoryRange,
  RamVisibility,
} from "../mod.ts";
import { GuestRamSnapshot, SnapshotError } from "../snapshot.ts";
import { mapsLinesContaining, openFdCount, skipWithoutHugetlb } from "./support/requirements.ts";

const MiB = 1n << 20n;
const PAGE = 4096;

function fillPattern(manager: GuestMemoryManager, size: bigint, salt: number): void {
  const words = new Uint32Array(Number(size / 4n));
  for (let i = 0; i < words.length; i++) words[i] = (Math.imul(i, 0x9e3779b1) ^ salt) >>> 0;
  manager.client().guestMemory().write(0n, new Uint8Array(words.buffer));
}

/**
 * Dirty pages of an 8 MiB guest: scattered single pages, a run across two
 * 32-page bitmap words, a run of 100 pages (longer than one copy), a full
 * word, and the last page of RAM.
 */
function dirtyPages(): number[] {
  const pages = new Set<number>();
  for (let i = 0; i < 300; i++) pages.add((i * 104729 + 7) % 2048);
  for (let p = 60; p < 70; p++) pages.add(p);
  for (let p = 1200; p < 1300; p++) pages.add(p);
  for (let p = 1600; p < 1632; p++) pages.add(p);
  pages.add(2047);
  return [...pages].sort((a, b) => a - b);
}

function writeDirty(manager: GuestMemoryManager, pages: readonly number[], value: number): void {
  const memory = manager.client().guestMemory();
  for (const page of pages) memory.writeU32(page * PAGE + ((page * 52) % PAGE), value);
}

const MODES = [
  { name: "shared", build: () => new GuestMemoryBuilder() },
  { name: "private", build: () => new GuestMemoryBuilder().privateMemory(true) },
  { name: "hugetlb", build: () => new GuestMemoryBuilder().hugepages() },
] as const;

for (const mode of MODES) {
  Deno.test({
    name:
      `incremental restore of ${mode.name} RAM: exact contents, every page once, again and again`,
    ignore: mode.name === "hugetlb" && skipWithoutHugetlb(),
    fn: () => {
      const fds = openFdCount();
      const mappings = liveHostMappingCount();
      const size = 8n * MiB;
      {
        using manager = mode.build().build(MemoryLayout.fromGaps(size, []));
        const memory = manager.client().guestMemory();
        fillPattern(manager, size, 1);
        const original = memory.readBytes(0n, size);
        manager.dirtyTracker().start();
        using snapshot = GuestRamSnapshot.take(manager);
        const pages = dirtyPages();
        for (let round = 0; round < 3; round++) {
          writeDirty(manager, pages, 0xdead0000 + round);
          assert.equal(snapshot.restoreDirty(manager), pages.length);
          assert.deepEqual(memory.readBytes(0n, size), original);
          assert.deepEqual(manager.dirtyTracker().dirtyPages(), []);
        }
        assert.equal(snapshot.restoreDirty(manager), 0);
      }
      assert.equal(liveHostMappingCount(), mappings);
      assert.equal(openFdCount(), fds);
      assert.equal(mapsLinesContaining("guest-ram"), 0);
    },
  });
}

Deno.test("incremental restore writes hidden and read-only pieces through the RAM file, then their visibility", () => {
  using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
    MemoryLayout.fromGaps(2n * MiB, []),
  );
  const control = manager.ramVisibilityControl();
  const memory = manager.client().guestMemory();
  const bios = new MemoryRange(0xf0000n, 0x100000n);
  const pam = new MemoryRange(0xc0000n, 0xc4000n);
  fillPattern(manager, 2n * MiB, 3);
  const original = memory.readBytes(0n, 2n * MiB);
  control.setRamVisibility(bios, RamVisibility.ReadOnly);
  manager.dirtyTracker().start();
  using snapshot = GuestRamSnapshot.take(manager);
  // Written while writable, then hidden or made read-only before the restore.
  control.setRamVisibility(bios, RamVisibility.ReadWrite);
  memory.writeU32(0xf1000, 1);
  memory.writeU32(0xc1000, 2);
  memory.writeU32(0x10000, 3);
  control.setRamVisibility(bios, RamVisibility.Unmapped);
  control.setRamVisibility(pam, RamVisibility.ReadOnly);
  assert.equal(snapshot.restoreDirty(manager), 3);
  assert.equal(memory.isMapped(0xf0000n, 4, true), false); // read-only again
  assert.equal(memory.isMapped(0xf0000n, 4), true);
  assert.equal(memory.isMapped(0xc0000n, 4, true), true); // read-write again
  assert.deepEqual(memory.readBytes(0n, 2n * MiB), original);
});

Deno.test("incremental restore into another manager maps that one's RAM instead, and leaves the first alone", () => {
  const mappings = liveHostMappingCount();
  const size = 4n * MiB;
  {
    using first = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(size, []));
    using second = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(size, []));
    fillPattern(first, size, 5);
    const original = first.client().guestMemory().readBytes(0n, size);
    first.dirtyTracker().start();
    second.dirtyTracker().start();
    using snapshot = GuestRamSnapshot.take(first);
    writeDirty(first, [1, 2, 3], 7);
    assert.equal(snapshot.restoreDirty(first), 3);
    snapshot.restore(second); // the second's point is the snapshot now
    writeDirty(first, [9], 8);
    const firstNow = first.client().guestMemory().readBytes(0n, size);
    writeDirty(second, [4, 1000], 9);
    assert.equal(snapshot.restoreDirty(second), 2);
    assert.deepEqual(second.client().guestMemory().readBytes(0n, size), original);
    assert.deepEqual(first.client().guestMemory().readBytes(0n, size), firstNow);
  }
  assert.equal(liveHostMappingCount(), mappings);
  assert.equal(mapsLinesContaining("guest-ram"), 0);
});

Deno.test("a snapshot does not keep a manager's RAM mapped once the manager is gone", () => {
  const fds = openFdCount();
  const size = 4n * MiB;
  const manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(size, []));
  manager.dirtyTracker().start();
  const snapshot = GuestRamSnapshot.take(manager);
  writeDirty(manager, [5], 1);
  assert.equal(snapshot.restoreDirty(manager), 1);
  manager[Symbol.dispose]();
  assert.equal(mapsLinesContaining("/memfd:guest-ram "), 0);
  assert.ok(mapsLinesContaining("/memfd:guest-ram-snapshot ") > 0); // its own view stays
  snapshot[Symbol.dispose]();
  snapshot[Symbol.dispose](); // idempotent
  assert.equal(mapsLinesContaining("guest-ram"), 0);
  assert.equal(openFdCount(), fds);
});

Deno.test("a failure to map the view changes nothing; the next incremental restore works", () => {
  const mappings = liveHostMappingCount();
  const size = 4n * MiB;
  {
    using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(size, []));
    const memory = manager.client().guestMemory();
    fillPattern(manager, size, 6);
    const original = memory.readBytes(0n, size);
    const tracker = manager.dirtyTracker();
    tracker.start();
    using snapshot = GuestRamSnapshot.take(manager);
    writeDirty(manager, [3, 700], 1);
    const point = tracker.point;
    const before = liveHostMappingCount();
    // The snapshot's view is the restore's one mmap (kept once made).
    arm("mmap", 1, Errno.ENOMEM);
    try {
      assert.throws(
        () => snapshot.restoreDirty(manager),
        (err) => err instanceof SnapshotError && err.kind === "copy",
      );
    } finally {
      disarm();
    }
    assert.equal(tracker.point, point);
    assert.deepEqual(tracker.dirtyPages(), [3n * 4096n, 700n * 4096n]);
    assert.equal(liveHostMappingCount(), before);
    assert.equal(snapshot.restoreDirty(manager), 2);
    assert.deepEqual(memory.readBytes(0n, size), original);
  }
  assert.equal(liveHostMappingCount(), mappings);
  assert.equal(mapsLinesContaining("guest-ram"), 0);
});
