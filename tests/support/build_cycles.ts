/**
 * Build/use/dispose cycles of guest memory in every mode, for leak tests.
 *
 * Run as a script it measures itself in a fresh process where nothing but
 * the cycles runs:
 * `deno run --v8-flags=--expose-gc --allow-ffi build_cycles.ts <cycles> <set>`
 * (set `all` or `failures`) runs the cycles once to warm up, collects
 * garbage, counts open fds and /proc/self/maps lines, runs the cycles again,
 * collects garbage, counts again and prints the numbers as JSON.
 *
 * The JS engine maps and unmaps memory of its own as its heap grows and
 * shrinks, so the maps count leaves out the engine's heap pages (anonymous
 * `rw-p` mappings of exactly 256 KiB at a 256 KiB boundary). Nothing guest
 * memory maps looks like that: reservations are `---p`, shared RAM is `rw-s`
 * and private RAM comes in ranges of 2 MiB here. Warming up with a full round
 * lets the allocator's own tables reach their high-water mark first.
 */
import assert from "node:assert/strict";
import { GuestMemoryBuilder } from "../../builder.ts";
import { MemoryLayout } from "../../layout/memory_layout.ts";
import { MemoryRange } from "../../layout/memory_range.ts";
import { MemoryBuildError, type MemoryBuildErrorKind } from "../../manager/memory_build_error.ts";
import { Vtl } from "../../manager/vtl.ts";
import { RecordingPartition } from "../../testing/recording_partition.ts";
import { RamVisibility } from "../../regions/ram_visibility_control.ts";
import { readTextFile } from "../../ffi/_proc_files.ts";
import { openFdCount } from "./requirements.ts";
import { managerInternals } from "../../manager/guest_memory_manager.ts";

const MiB = 1n << 20n;

/** 2 MiB RAM, a 2 MiB gap, 2 MiB RAM, then a 2 MiB VTL2 range at 8 MiB. */
export const CYCLE_LAYOUT: MemoryLayout = MemoryLayout.fromGaps(
  4n * MiB,
  [new MemoryRange(2n * MiB, 4n * MiB)],
  { vtl2Range: new MemoryRange(8n * MiB, 10n * MiB) },
);

/** An address space far larger than any host can reserve. */
const FAR = MemoryLayout.fromGaps(4n * MiB, [
  new MemoryRange(1n << 62n, (1n << 62n) + 0x1000n),
]);

/** RAM that does not start at 0 (refused by x86 legacy support). */
const HIGH_RAM = MemoryLayout.fromRanges([new MemoryRange(MiB, 4n * MiB)], []);

/** Asserts `fn` throws a MemoryBuildError of `kind`. */
export function expectBuildFailure(fn: () => unknown, kind: MemoryBuildErrorKind): void {
  assert.throws(fn, (e) => e instanceof MemoryBuildError && e.kind === kind);
}

/** Reservations seen by successful cycles: `[base, size]`. */
export type SeenReservation = (base: bigint, size: bigint) => void;

/** Cycles that build, use and dispose of a manager. */
export const SUCCESS_CYCLES: ReadonlyArray<(i: number, seen: SeenReservation) => void> = [
  // Shared memfd, touched, attached with an alias and pins.
  (i, seen) => {
    using manager = new GuestMemoryBuilder().vtl0AliasMap(1n << 30n).pinMappings(true).build(
      CYCLE_LAYOUT,
    );
    seen(managerInternals(manager).va.base, managerInternals(manager).va.size);
    manager.client().guestMemory().writeU32(BigInt(i % 1024) * 4n, i);
    manager.attachPartition(Vtl.Vtl2, new RecordingPartition({ recordEvents: false }));
  },
  // Private memory with transparent hugepages.
  (i, seen) => {
    using manager = new GuestMemoryBuilder().privateMemory(true).transparentHugepages(true)
      .build(CYCLE_LAYOUT);
    seen(managerInternals(manager).va.base, managerInternals(manager).va.size);
    manager.client().guestMemory().writeU8(8n * MiB + BigInt(i % 4096), 1);
  },
  // x86 legacy splitting with visibility changes under an attached partition.
  (_i, seen) => {
    using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(CYCLE_LAYOUT);
    seen(managerInternals(manager).va.base, managerInternals(manager).va.size);
    using _attachment = manager.attachPartition(Vtl.Vtl0, new RecordingPartition());
    const vga = new MemoryRange(0xa0000n, 0xc0000n);
    manager.ramVisibilityControl().setRamVisibility(vga, RamVisibility.Unmapped);
    manager.ramVisibilityControl().setRamVisibility(vga, RamVisibility.ReadOnly);
  },
  // An existing backing handed from one manager to the next.
  (i, seen) => {
    using first = new GuestMemoryBuilder().build(CYCLE_LAYOUT);
    seen(managerInternals(first).va.base, managerInternals(first).va.size);
    first.client().guestMemory().writeU8(0x10n, i & 0xff);
    using backing = first.sharedMemoryBacking()!;
    using second = new GuestMemoryBuilder().existingBacking(backing).build(CYCLE_LAYOUT);
    seen(managerInternals(second).va.base, managerInternals(second).va.size);
    assert.equal(second.client().guestMemory().readU8(0x10n), i & 0xff);
  },
];

/** Cycles whose builds fail halfway, after allocating something. */
export const FAILURE_CYCLES: ReadonlyArray<() => void> = [
  // After the memfd: the alias map check.
  () =>
    expectBuildFailure(
      () => new GuestMemoryBuilder().vtl0AliasMap(4n * MiB).build(CYCLE_LAYOUT),
      "aliasMapWontFit",
    ),
  // After the reservation and the region manager: the x86 RAM check.
  () =>
    expectBuildFailure(
      () => new GuestMemoryBuilder().x86LegacySupport(true).build(HIGH_RAM),
      "invalidRamForX86",
    ),
  // After the memfd: the reservation itself.
  () => expectBuildFailure(() => new GuestMemoryBuilder().build(FAR), "vaMapper"),
  // Inside the hugetlb allocation (4 KiB pages: no such pool).
  () =>
    expectBuildFailure(
      () => new GuestMemoryBuilder().hugepages(4096n).build(CYCLE_LAYOUT),
      "hugepageAllocationFailed",
    ),
];

/** Runs cycle `i` of `set` (`all` alternates successes and failures). */
export function runCycle(set: "all" | "failures", i: number, seen: SeenReservation): void {
  if (set === "failures") {
    FAILURE_CYCLES[i % FAILURE_CYCLES.length]();
  } else if (i % 2 === 0) {
    SUCCESS_CYCLES[(i / 2) % SUCCESS_CYCLES.length](i, seen);
  } else {
    FAILURE_CYCLES[((i - 1) / 2) % FAILURE_CYCLES.length]();
  }
}

/**
 * What a measured run in a fresh process reports, per round: open fds and
 * maps lines before and after the cycles. A round whose maps count moved
 * (the engine's malloc arenas sometimes add a line) is followed by another,
 * up to {@linkcode MAX_ROUNDS}; a real leak moves every round by hundreds.
 */
export interface CycleCounts {
  /** `[before, after]` open fds, per round. */
  fds: Array<[number, number]>;
  /** `[before, after]` maps lines outside the engine's heap, per round. */
  maps: Array<[number, number]>;
}

const ENGINE_PAGE = 0x40000n;

/** /proc/self/maps lines, the JS engine's heap pages left out (see the module doc). */
export function mapsLinesOutsideEngineHeap(): number {
  let count = 0;
  for (const line of readTextFile("/proc/self/maps").split("\n")) {
    if (line.length === 0) continue;
    const fields = line.split(/\s+/);
    const [start, end] = fields[0].split("-").map((hex) => BigInt(`0x${hex}`));
    const anonymous = fields.length < 6 || fields[5] === "";
    if (
      anonymous && fields[1] === "rw-p" && end - start === ENGINE_PAGE && start % ENGINE_PAGE === 0n
    ) continue;
    count++;
  }
  return count;
}

/** Up to this many measured rounds (see {@linkcode CycleCounts}). */
export const MAX_ROUNDS = 3;

if (import.meta.main) {
  const cycles = Number(Deno.args[0] ?? "1000");
  const set = Deno.args[1] === "failures" ? "failures" : "all";
  const ignore: SeenReservation = () => {};
  const gc = (globalThis as { gc?: () => void }).gc;
  const collect = () => {
    gc?.();
    gc?.();
  };
  for (let i = 0; i < cycles; i++) runCycle(set, i, ignore);
  const counts: CycleCounts = { fds: [], maps: [] };
  for (let round = 0; round < MAX_ROUNDS; round++) {
    collect();
    const fds = openFdCount();
    const maps = mapsLinesOutsideEngineHeap();
    for (let i = 0; i < cycles; i++) runCycle(set, i, ignore);
    collect();
    counts.fds.push([fds, openFdCount()]);
    counts.maps.push([maps, mapsLinesOutsideEngineHeap()]);
    if (counts.maps[round][0] === counts.maps[round][1]) break;
  }
  console.log(JSON.stringify(counts));
}
