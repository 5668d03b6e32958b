import assert from "node:assert/strict";
import { GuestMemoryBuilder } from "../builder.ts";
import { readTextFile } from "../ffi/_proc_files.ts";
import { MemoryLayout } from "../layout/memory_layout.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import type { MemoryBuildErrorKind } from "../manager/memory_build_error.ts";
import { VaMapper } from "../mapping/_va_mapper.ts";
import {
  CYCLE_LAYOUT,
  type CycleCounts,
  expectBuildFailure,
  FAILURE_CYCLES,
  runCycle,
} from "./support/build_cycles.ts";
import { openFdCount, skipWithoutHugetlb, withHugetlbPool } from "./support/requirements.ts";

const MiB = 1n << 20n;
const CYCLES = 1000;

/** Lines of /proc/self/maps that belong to guest RAM (memfds and named private RAM). */
function guestRamLines(): string[] {
  return readTextFile("/proc/self/maps").split("\n").filter((l) => l.includes("guest-ram"));
}

/** HugePages_Free of /proc/meminfo. */
function freeHugepages(): number {
  const line = readTextFile("/proc/meminfo").split("\n").find((l) =>
    l.startsWith("HugePages_Free:")
  );
  return Number(line!.split(/\s+/)[1]);
}

/** Runs `build_cycles.ts` in a fresh process and returns its counts. */
async function measureInFreshProcess(
  cycles: number,
  set: "all" | "failures",
): Promise<CycleCounts> {
  const script = new URL("./support/build_cycles.ts", import.meta.url).pathname;
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--v8-flags=--expose-gc",
      "--allow-ffi",
      "--allow-read",
      "--allow-env",
      script,
      String(cycles),
      set,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(output.stdout).trim();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  return JSON.parse(stdout.split("\n").at(-1)!) as CycleCounts;
}

/** Runs `fn` recording every VaMapper reserved meanwhile. */
function recordingReservations<T>(fn: (reserved: VaMapper[]) => T): T {
  const real = VaMapper.reserve;
  const reserved: VaMapper[] = [];
  VaMapper.reserve = (size: bigint, alignment?: bigint): VaMapper => {
    const va = real.call(VaMapper, size, alignment);
    reserved.push(va);
    return va;
  };
  try {
    return fn(reserved);
  } finally {
    VaMapper.reserve = real;
  }
}

function assertNoLeak(counts: CycleCounts): void {
  for (const [before, after] of counts.fds) assert.equal(after, before, "open fds");
  const [before, after] = counts.maps.at(-1)!;
  assert.equal(after, before, `maps lines: ${JSON.stringify(counts.maps)}`);
}

Deno.test(`${CYCLES} mixed build/dispose cycles: fds and maps lines where they started`, async () => {
  // Half the cycles build, use and dispose of managers in every mode (shared,
  // private with THP, x86 legacy, existing backing; attached partitions);
  // the other half fail halfway through a build.
  assertNoLeak(await measureInFreshProcess(CYCLES, "all"));
});

Deno.test("builds failing halfway, over and over: fds and maps lines where they started", async () => {
  assertNoLeak(await measureInFreshProcess(CYCLES, "failures"));
});

Deno.test(`${CYCLES} mixed cycles in this process: no fd, reservation or RAM mapping left`, () => {
  for (let i = 0; i < 16; i++) runCycle("all", i, () => {});
  const fds = openFdCount();
  recordingReservations((reserved) => {
    for (let i = 0; i < CYCLES; i++) runCycle("all", i, () => {});
    // 625 managers (the existing-backing cycle builds two) and 125 x86 failures.
    assert.equal(reserved.length, 750);
    assert.deepEqual(reserved.filter((va) => va.isReserved), []);
  });
  assert.equal(openFdCount(), fds);
  assert.deepEqual(guestRamLines(), []);
});

Deno.test("a build failing at each step leaves nothing behind", async (t) => {
  for (const cycle of FAILURE_CYCLES) cycle();
  const steps: Array<[string, () => unknown, MemoryBuildErrorKind]> = [
    [
      "after the memfd: alias map",
      () => new GuestMemoryBuilder().vtl0AliasMap(0n).build(CYCLE_LAYOUT),
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
        return new GuestMemoryBuilder().existingBacking(backing).build(CYCLE_LAYOUT);
      },
      "existingBackingTooSmall",
    ],
    [
      "inside the hugetlb allocation",
      () => new GuestMemoryBuilder().hugepages(4096n).build(CYCLE_LAYOUT),
      "hugepageAllocationFailed",
    ],
  ];
  for (const [name, fn, kind] of steps) {
    await t.step(name, () => {
      const fds = openFdCount();
      recordingReservations((reserved) => {
        expectBuildFailure(fn, kind);
        assert.deepEqual(reserved.filter((va) => va.isReserved), []);
      });
      assert.equal(openFdCount(), fds);
      assert.deepEqual(guestRamLines(), []);
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
      for (let i = 0; i < 100; i++) {
        using manager = new GuestMemoryBuilder().hugepages().build(layout);
        manager.client().guestMemory().writeU8(BigInt(i) * 0x1000n, 1);
        assert.equal(freeHugepages(), 0);
        // A second guest does not fit while the first holds the pool.
        expectBuildFailure(
          () => new GuestMemoryBuilder().hugepages().build(MemoryLayout.fromGaps(2n * MiB, [])),
          "hugepageAllocationFailed",
        );
      }
      assert.equal(freeHugepages(), 4);
      assert.equal(openFdCount(), fds);
      assert.deepEqual(guestRamLines(), []);
    });
  },
});
