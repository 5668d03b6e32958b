/**
 * Region manager scaling: the cost of changing one region must not grow
 * with the number of regions (at 10,000 regions a change must cost at most
 * twice what it costs at 10).
 *
 * Each case is a guest with N one-page device memory regions placed in its
 * MMIO gap (a free page between neighbours), all mapped, with a recording
 * partition attached; the measured operation makes the middle region
 * read-only and then writable again (`mapToGuest` at the same address: a
 * deactivation and an activation each time). In the "backed" group every
 * region has a page of a shared memory object mapped, so the host VA work
 * (two mmap calls and the host mapping table update) is included; the "no
 * backing" group measures the region tree and partition work alone.
 *
 * Results are named `region_pair_backed_N` and `region_pair_bare_N` (N
 * regions); bench/run.ts computes the 10,000 vs 10 ratio per round.
 *
 * Run: deno run --allow-ffi --allow-read --allow-write --allow-env bench/region_manager_bench.ts
 * (prints one JSON line per benchmark; see bench/bench_support.ts)
 *
 * @module
 */
import { GuestMemoryBuilder, MemoryLayout, MemoryRange, SharedMemoryBacking, Vtl } from "../mod.ts";
import { RecordingPartition } from "../testing.ts";
import { bench } from "./bench_support.ts";

const PAGE = 0x1000n;
/** Where the device regions go: the MMIO gap above 1 MiB of RAM. */
const GAP_START = 0x100000n;

function setup(count: number, backed: boolean): (writable: boolean) => void {
  const gap = new MemoryRange(GAP_START, GAP_START + BigInt(count) * 2n * PAGE);
  // Kept for the life of the bench process (released at exit).
  const manager = new GuestMemoryBuilder().build(
    MemoryLayout.fromRanges([new MemoryRange(0n, GAP_START)], [gap]),
  );
  manager.attachPartition(Vtl.Vtl0, new RecordingPartition({ recordEvents: false }));
  const backing = SharedMemoryBacking.create(BigInt(count) * PAGE, { name: "region-bench" });
  const devices = manager.deviceMemoryMapper();
  let middle = (_writable: boolean): void => {};
  for (let i = 0; i < count; i++) {
    const { control, region } = devices.newRegion(PAGE, `r${i}`);
    if (backed) region.map(0n, backing, BigInt(i) * PAGE, PAGE, true);
    const gpa = GAP_START + BigInt(i) * 2n * PAGE;
    control.mapToGuest(gpa, true);
    if (i === count >> 1) middle = (writable) => control.mapToGuest(gpa, writable);
  }
  return middle;
}

for (const backed of [true, false]) {
  for (const count of [10, 100, 1000, 10000]) {
    const remap = setup(count, backed);
    bench(`region_pair_${backed ? "backed" : "bare"}_${count}`, () => {
      remap(false);
      remap(true);
    }, { samples: 200, budgetMs: 250 });
  }
}
