import assert from "node:assert/strict";
import { GuestMemoryBuilder } from "../builder.ts";
import { readTextFile } from "../ffi/proc_files.ts";
import { MemoryLayout } from "../layout/memory_layout.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { MemoryBuildError, type MemoryBuildErrorKind } from "../manager/memory_build_error.ts";
import { Vtl } from "../manager/vtl.ts";
import { RecordingPartition } from "../partition/recording_partition.ts";
import { RamVisibility } from "../regions/ram_visibility_control.ts";
import {
  mapsLineCount,
  openFdCount,
  skipWithoutHugetlb,
  withHugetlbPool,
} from "./support/requirements.ts";

const MiB = 1n << 20n;
const LAYOUT = MemoryLayout.fromGaps(4n * MiB, [new MemoryRange(2n * MiB, 4n * MiB)], {
  vtl2Range: new MemoryRange(8n * MiB, 10n * MiB),
});
const CYCLES = 1000;

/** Lines of /proc/self/maps that belong to guest RAM (memfd or named private RAM). */
function guestRamLines(): number {
  return readTextFile("/proc/self/maps").split("\n").filter((l) => l.includes("guest-ram")).length;
}

function expectFailure(fn: () => unknown, kind: MemoryBuildErrorKind): void {
  assert.throws(fn, (e) => e instanceof MemoryBuildError && e.kind === kind);
}

/** One build/use/dispose cycle in mode `i % modes`. */
const MODES: ReadonlyArray<(i: number) => void> = [
  // Shared memfd, touched, attached with an alias and pins, then disposed.
  (i) => {
    using manager = new GuestMemoryBuilder().vtl0AliasMap(1n << 30n).pinMappings(true).build(
      LAYOUT,
    );
    manager.client().guestMemory().writeU32(BigInt(i % 1024) * 4n, i);
    manager.attachPartition(Vtl.Vtl2, new RecordingPartition({ recordEvents: false }));
  },
  // Private memory with THP.
  (i) => {
    using manager = new GuestMemoryBuilder().privateMemory(true).transparentHugepages(true)
      .build(LAYOUT);
    manager.client().guestMemory().writeU8(8n * MiB + BigInt(i), 1);
  },
  // x86 legacy splitting with visibility changes.
  () => {
    using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(LAYOUT);
    using _attachment = manager.attachPartition(Vtl.Vtl0, new RecordingPartition());
    const vga = new MemoryRange(0xa0000n, 0xc0000n);
    manager.ramVisibilityControl().setRamVisibility(vga, RamVisibility.Unmapped);
    manager.ramVisibilityControl().setRamVisibility(vga, RamVisibility.ReadOnly);
  },
  // Existing backing handed from one manager to the next.
  (i) => {
    using first = new GuestMemoryBuilder().build(LAYOUT);
    first.client().guestMemory().writeU8(0x10n, i & 0xff);
    using backing = first.sharedMemoryBacking()!;
    using second = new GuestMemoryBuilder().existingBacking(backing).build(LAYOUT);
    assert.equal(second.client().guestMemory().readU8(0x10n), i & 0xff);
  },
  // Failing halfway: after the memfd (alias), after the reservation (x86).
  () => {
    expectFailure(
      () => new GuestMemoryBuilder().vtl0AliasMap(4n * MiB).build(LAYOUT),
      "aliasMapWontFit",
    );
    expectFailure(
      () =>
        new GuestMemoryBuilder().x86LegacySupport(true).build(
          MemoryLayout.fromRanges([new MemoryRange(MiB, 4n * MiB)], []),
        ),
      "invalidRamForX86",
    );
  },
  // Failing in the reservation and in the hugetlb allocation.
  () => {
    expectFailure(
      () =>
        new GuestMemoryBuilder().build(
          MemoryLayout.fromGaps(4n * MiB, [new MemoryRange(1n << 62n, (1n << 62n) + 0x1000n)]),
        ),
      "vaMapper",
    );
    expectFailure(
      () => new GuestMemoryBuilder().hugepages(4096n).build(LAYOUT),
      "hugepageAllocationFailed",
    );
  },
];

Deno.test(`${CYCLES} mixed build/dispose cycles leave no fd or mapping behind`, () => {
  // Warm up lazily created state (libc, page size, V8 code) before counting.
  for (let i = 0; i < MODES.length * 2; i++) MODES[i % MODES.length](i);
  const fds = openFdCount();
  const maps = mapsLineCount();
  assert.equal(guestRamLines(), 0);
  for (let i = 0; i < CYCLES; i++) MODES[i % MODES.length](i);
  assert.equal(guestRamLines(), 0);
  assert.equal(openFdCount(), fds);
  assert.equal(mapsLineCount(), maps);
});

Deno.test("a build failing at each step leaves nothing behind", async (t) => {
  MODES[4](0);
  MODES[5](0);
  const steps: Array<[string, () => unknown, MemoryBuildErrorKind]> = [
    [
      "after the memfd: alias map",
      () => new GuestMemoryBuilder().vtl0AliasMap(0n).build(LAYOUT),
      "aliasMapWontFit",
    ],
    [
      "after the memfd: the reservation",
      () =>
        new GuestMemoryBuilder().build(
          MemoryLayout.fromGaps(4n * MiB, [new MemoryRange(1n << 62n, (1n << 62n) + 0x1000n)]),
        ),
      "vaMapper",
    ],
    [
      "after the reservation and region manager: x86 RAM",
      () =>
        new GuestMemoryBuilder().x86LegacySupport(true).build(
          MemoryLayout.fromRanges([new MemoryRange(MiB, 4n * MiB)], []),
        ),
      "invalidRamForX86",
    ],
    [
      "after duplicating an existing backing: its size",
      () => {
        using small = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(2n * MiB, []));
        using backing = small.sharedMemoryBacking()!;
        return new GuestMemoryBuilder().existingBacking(backing).build(LAYOUT);
      },
      "existingBackingTooSmall",
    ],
    [
      "inside the hugetlb allocation",
      () => new GuestMemoryBuilder().hugepages(4096n).build(LAYOUT),
      "hugepageAllocationFailed",
    ],
  ];
  for (const [name, fn, kind] of steps) {
    await t.step(name, () => {
      const fds = openFdCount();
      const maps = mapsLineCount();
      expectFailure(fn, kind);
      assert.equal(openFdCount(), fds);
      assert.equal(mapsLineCount(), maps);
    });
  }
});

Deno.test({
  name: "hugetlb build/dispose cycles return every page to the pool",
  ignore: skipWithoutHugetlb(),
  async fn() {
    await withHugetlbPool(4, (granted) => {
      assert.equal(granted, 4);
      const layout = MemoryLayout.fromGaps(8n * MiB, []);
      new GuestMemoryBuilder().hugepages().build(layout)[Symbol.dispose]();
      const fds = openFdCount();
      const maps = mapsLineCount();
      for (let i = 0; i < 100; i++) {
        using manager = new GuestMemoryBuilder().hugepages().build(layout);
        manager.client().guestMemory().writeU8(BigInt(i) * 0x1000n, 1);
        // A second guest does not fit while the first holds the pool.
        expectFailure(
          () => new GuestMemoryBuilder().hugepages().build(MemoryLayout.fromGaps(2n * MiB, [])),
          "hugepageAllocationFailed",
        );
      }
      assert.equal(openFdCount(), fds);
      assert.equal(mapsLineCount(), maps);
    });
  },
});
