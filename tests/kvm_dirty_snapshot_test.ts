import assert from "node:assert/strict";
import { KvmPartition } from "../kvm.ts";
import {
  GuestMemoryBuilder,
  type GuestMemoryManager,
  MemoryLayout,
  MemoryRange,
  RamVisibility,
  Vtl,
} from "../mod.ts";
import { GuestRamSnapshot } from "../snapshot.ts";
import { GuestProbe } from "../testing.ts";
import { skipWithoutKvm } from "./support/requirements.ts";
import { mulberry32 } from "./support/seeded_random.ts";

const MiB = 1n << 20n;
const RAM_SIZE = 32n * MiB;
const GAP = new MemoryRange(0xe000_0000n, 0x1_0000_0000n);
const PAGE = 4096n;

/** `count` distinct random RAM pages not in `taken` (which gains them). */
function pickPages(random: () => number, count: number, taken: Set<bigint>, within: MemoryRange) {
  const pages: bigint[] = [];
  const first = within.start / PAGE;
  const n = Number(within.len / PAGE);
  while (pages.length < count) {
    const page = (first + BigInt(Math.floor(random() * n))) * PAGE;
    if (taken.has(page)) continue;
    taken.add(page);
    pages.push(page);
  }
  return pages;
}

/** SHA-256 of all of RAM as the host reads it (every piece must be readable). */
async function ramChecksum(manager: GuestMemoryManager): Promise<string> {
  const memory = manager.client().guestMemory();
  const bytes = memory.readBytes(0n, RAM_SIZE);
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** SHA-256 of the snapshot's RAM. */
async function snapshotChecksum(snapshot: GuestRamSnapshot): Promise<string> {
  const parts = snapshot.pieces.map((p) => snapshot.read(p.range.start, Number(p.range.len)));
  const all = new Uint8Array(Number(snapshot.size));
  let at = 0;
  for (const part of parts) {
    all.set(part, at);
    at += part.length;
  }
  const digest = await crypto.subtle.digest("SHA-256", all);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function sorted(pages: Iterable<bigint>): bigint[] {
  return [...pages].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** A 32 MiB x86 legacy guest with recognisable contents, a KVM partition and a probe. */
function setup() {
  const stack = new DisposableStack();
  const manager = stack.use(
    new GuestMemoryBuilder().x86LegacySupport(true).build(MemoryLayout.fromGaps(RAM_SIZE, [GAP])),
  );
  const memory = manager.client().guestMemory();
  const words = new Uint32Array(Number(RAM_SIZE / 4n));
  for (let i = 0; i < words.length; i++) words[i] = Math.imul(i, 0x9e3779b1) >>> 0;
  memory.write(0n, new Uint8Array(words.buffer));
  const partition = stack.use(KvmPartition.create());
  stack.use(manager.attachPartition(Vtl.Vtl0, partition));
  // The probe's code page is its own read-only slot at 0xfffff000 (in the
  // gap, not RAM, never written): the only guest memory the probe guest
  // touches besides the addresses it is told to load or store. Without
  // paging or a stack, no page table, descriptor or stack page is written.
  const probe = stack.use(GuestProbe.create(partition));
  return { stack, manager, memory, partition, probe };
}

Deno.test({
  name: "dirty set of a KVM guest and host writes is exact; incremental restore matches",
  ignore: skipWithoutKvm(),
  fn: async () => {
    const { stack, manager, memory, partition, probe } = setup();
    using _ = stack;
    const tracker = manager.dirtyTracker();
    tracker.start();
    assert.equal(partition.isDirtyLogging, true);
    assert.equal(partition.manualDirtyLogProtect, true);
    using snapshot = GuestRamSnapshot.take(manager);
    const before = await ramChecksum(manager);
    assert.equal(await snapshotChecksum(snapshot), before);
    assert.deepEqual(tracker.dirtyPages(), []);

    const random = mulberry32(15);
    const taken = new Set<bigint>();
    const all = new MemoryRange(0n, RAM_SIZE);
    const N = 64;
    const M = 48;
    const guestPages = pickPages(random, N, taken, all);
    const hostPages = pickPages(random, M, taken, all);
    for (const page of guestPages) {
      const gpa = page + BigInt(Math.floor(random() * 1024)) * 4n;
      assert.deepEqual(probe.store(gpa, 4, 0xdead0000 | Number(page >> 12n) & 0xffff), {
        kind: "done",
      });
    }
    for (const page of hostPages) {
      memory.writeU16(page + BigInt(Math.floor(random() * 2048)) * 2n, 0xbeef);
    }
    // Loads dirty nothing.
    for (let i = 0; i < 16; i++) {
      probe.load(BigInt(Math.floor(random() * Number(RAM_SIZE / 4n))) * 4n, 4);
    }
    memory.readU32(0x1000n);

    const expected = sorted([...guestPages, ...hostPages]);
    assert.deepEqual(tracker.dirtyPages(), expected);
    // Asking again reports the same (the point did not move).
    assert.deepEqual(tracker.dirtyPages(), expected);
    assert.deepEqual(
      tracker.dirtyPages(new MemoryRange(0n, 16n * MiB)),
      expected.filter((p) => p < 16n * MiB),
    );
    assert.notEqual(await ramChecksum(manager), before);

    assert.equal(snapshot.restoreDirty(manager), N + M);
    assert.equal(await ramChecksum(manager), before);
    assert.deepEqual(tracker.dirtyPages(), []);

    // A second round from the same snapshot copies only what changed since.
    assert.deepEqual(probe.store(0x400010n, 4, 1), { kind: "done" });
    memory.writeU8(0x500000n, 1);
    assert.deepEqual(tracker.dirtyPages(), [0x400000n, 0x500000n]);
    assert.equal(snapshot.restoreDirty(manager), 2);
    assert.equal(await ramChecksum(manager), before);

    tracker.stop();
    assert.equal(partition.isDirtyLogging, false);
    assert.ok(partition.slots().every((s) => s.gpa >= RAM_SIZE || !s.readonly));
  },
});

Deno.test({
  name: "dirty pages survive PAM flips (slot deleted and re-created) while logging",
  ignore: skipWithoutKvm(),
  fn: async () => {
    const { stack, manager, memory, partition, probe } = setup();
    using _ = stack;
    const control = manager.ramVisibilityControl();
    const piece = new MemoryRange(0xc4000n, 0xc8000n);
    const other = new MemoryRange(0xd0000n, 0xd4000n);
    // The snapshot's view: `other` read-only.
    control.setRamVisibility(other, RamVisibility.ReadOnly);
    const tracker = manager.dirtyTracker();
    tracker.start();
    using snapshot = GuestRamSnapshot.take(manager);
    assert.equal(
      snapshot.pieces.find((p) => p.range.equals(other))?.visibility,
      RamVisibility.ReadOnly,
    );
    const before = await ramChecksum(manager);
    const slotBefore = partition.slotAt(piece.start)!.slot;

    const random = mulberry32(1515);
    const taken = new Set<bigint>();
    const guestPages = [0xc5000n, ...pickPages(random, 20, taken, new MemoryRange(MiB, RAM_SIZE))];
    for (const page of guestPages) {
      assert.deepEqual(probe.store(page + 0x20n, 4, 0x5a5a5a5a), { kind: "done" });
    }
    // RW -> RO -> RW: the piece's slot is deleted and made again each time.
    control.setRamVisibility(piece, RamVisibility.ReadOnly);
    assert.equal(partition.slotAt(piece.start)?.readonly, true);
    // A guest store to the read-only piece exits as MMIO and dirties nothing.
    assert.equal(probe.store(0xc6000n, 4, 1).kind, "mmio");
    control.setRamVisibility(piece, RamVisibility.ReadWrite);
    memory.writeU32(0xc7000n, 0x77);
    assert.equal(partition.slotAt(piece.start)?.readonly, false);
    assert.equal(partition.slotAt(piece.start)?.slot, slotBefore);
    assert.deepEqual(probe.store(0xc4000n, 1, 0x11), { kind: "done" });
    const hostPages = pickPages(random, 10, taken, new MemoryRange(MiB, RAM_SIZE));
    for (const page of hostPages) memory.fill(page + 0x100n, 16, 0xee);
    // Unmapping the piece and mapping it again while logging keeps its bits too.
    control.setRamVisibility(piece, RamVisibility.Unmapped);
    control.setRamVisibility(piece, RamVisibility.ReadWrite);
    control.setRamVisibility(other, RamVisibility.ReadWrite);

    const expected = sorted([...guestPages, 0xc7000n, 0xc4000n, ...hostPages]);
    assert.deepEqual(tracker.dirtyPages(), expected);
    assert.equal(snapshot.restoreDirty(manager), expected.length);
    // The guest's view is the snapshot's again: `other` read-only.
    assert.equal(partition.slotAt(other.start)?.readonly, true);
    assert.equal(probe.store(other.start, 4, 1).kind, "mmio");
    assert.equal(await ramChecksum(manager), before);
    tracker.stop();
  },
});

Deno.test({
  name: "a partition attached while tracking logs; one detached keeps what its guest wrote",
  ignore: skipWithoutKvm(),
  fn: () => {
    using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(8n * MiB, [GAP]));
    const tracker = manager.dirtyTracker();
    tracker.start();
    using partition = KvmPartition.create();
    const attachment = manager.attachPartition(Vtl.Vtl0, partition);
    assert.equal(partition.isDirtyLogging, true);
    {
      using probe = GuestProbe.create(partition);
      assert.deepEqual(probe.store(0x3000n, 4, 9), { kind: "done" });
    }
    attachment.detach();
    assert.equal(partition.isDirtyLogging, false);
    assert.deepEqual(tracker.dirtyPages(), [0x3000n]);
    tracker.stop();
  },
});
