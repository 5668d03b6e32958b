/**
 * Benchmark 9: the first `GuestMemory` access after the memory map changes.
 *
 * - `first_access_N` (N = 16, 1,000, 10,000, 100,000 host mappings: 1 MiB
 *   of RAM and N - 1 one-page device regions above it, bench/bench_support.ts
 *   `deviceGuest`, with a `RecordingPartition` attached, since 100,000
 *   regions exceed KVM's slots): one operation flips the highest device
 *   region between writable and read-only (`mapToGuest` in place), far from
 *   the accessed address, then does one `readU32` at RAM address 0x1000; only
 *   the read is timed (two `performance.now()` calls around it, ~70 ns of
 *   the figure), each operation timed on its own. Target: under 5 µs at
 *   100,000 mappings.
 * - `region_change_N`: the flip alone, for reference (what the change
 *   costs; the first access comes on top of it).
 * - `first_write_1tib`: a 1 TiB guest (`MemoryLayout.fromGaps(1 TiB, [])`,
 *   sparse shared memfd) freshly built for each operation; only the first
 *   `writeU32` (at 0x1000, a page fault included) is timed, the build and
 *   the disposal are not. Target: under 50 µs.
 *
 * The device regions are all writable and contiguous in guest and file
 * offsets, so their host mappings merge into few VMAs (the kernel's
 * vm.max_map_count, 65,530, is below 100,000).
 *
 * Run: deno run --allow-ffi --allow-read --allow-write --allow-env bench/first_access_bench.ts
 * (prints one JSON line per benchmark; see bench/bench_support.ts)
 *
 * @module
 */

import { GuestMemoryBuilder, MemoryLayout, Vtl } from "../mod.ts";
import { RecordingPartition } from "../testing.ts";
import { bench, deviceGuest } from "./bench_support.ts";

/** Host mappings (RAM included). */
const COUNTS = [16, 1000, 10000, 100000];
/** The RAM address read after each change. */
const READ_GPA = 0x1000;

for (const count of COUNTS) {
  using guest = deviceGuest(count - 1, false);
  guest.manager.attachPartition(Vtl.Vtl0, new RecordingPartition({ recordEvents: false }));
  const memory = guest.manager.client().guestMemory();
  const far = guest.controls[count - 2];
  const gpa = guest.gpa(count - 2);
  let writable = true;
  const change = () => {
    writable = !writable;
    far.mapToGuest(gpa, writable);
  };
  let sum = 0;
  bench(`first_access_${count}`, () => {
    change();
    const t0 = performance.now();
    sum += memory.readU32(READ_GPA);
    return (performance.now() - t0) * 1e6;
  }, { selfTimed: true, batch: 8, samples: 100, budgetMs: 300 });
  bench(`region_change_${count}`, change, { samples: 100, budgetMs: 200 });
  if (sum !== 0) throw new Error("RAM should read as zero");
}

const TIB = 1n << 40n;
const tib = MemoryLayout.fromGaps(TIB, []);
bench("first_write_1tib", () => {
  using manager = new GuestMemoryBuilder().build(tib);
  const memory = manager.client().guestMemory();
  const t0 = performance.now();
  memory.writeU32(READ_GPA, 1);
  return (performance.now() - t0) * 1e6;
}, { selfTimed: true, batch: 1, samples: 20, minSamples: 20, budgetMs: 0, warmupMs: 0 });
