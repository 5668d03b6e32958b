/**
 * Region manager scaling: the cost of mapping and unmapping one region must
 * not grow with the number of regions (at 10,000 regions a map/unmap pair
 * must cost at most twice what it costs at 10).
 *
 * Each case has N disjoint one-page regions (a free page between
 * neighbours), all mapped, with a recording partition attached; the
 * measured operation unmaps and re-maps the middle region. In the "backed"
 * group every region has a memfd page mapping, so the host VA work (two
 * mmap calls and the VaMapper table update) is included; the "no backing"
 * group measures the region tree and partition work alone.
 *
 * Run: deno bench --allow-ffi --allow-read --allow-write --allow-env bench/region_manager_bench.ts
 */
import { OwnedFd } from "../ffi/_owned_fd.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { VaMapper } from "../mapping/_va_mapper.ts";
import { PartitionMapper } from "../partition/_partition_mapper.ts";
import type { MapParams } from "../partition/_partition_mapper.ts";
import { RecordingPartition } from "../testing/recording_partition.ts";
import type { RegionHandle } from "../regions/_region_handle.ts";
import { RegionManager } from "../regions/_region_manager.ts";

const PAGE = 0x1000n;
const RW: MapParams = { writable: true, executable: true, prefetch: false };

function setup(count: number, backed: boolean): RegionHandle {
  const size = BigInt(count) * 2n * PAGE;
  // Kept for the life of the bench process (released at exit).
  const va = VaMapper.reserve(size);
  const backing = OwnedFd.memfd("region-bench", 0);
  backing.truncate(BigInt(count) * PAGE);
  const manager = new RegionManager(va);
  manager.addPartition(
    new PartitionMapper(new RecordingPartition({ recordEvents: false }), va, 0n, false),
  );
  const handles: RegionHandle[] = [];
  for (let i = 0; i < count; i++) {
    const start = BigInt(i) * 2n * PAGE;
    const handle = manager.newRegion(`r${i}`, new MemoryRange(start, start + PAGE), 0, true);
    if (backed) handle.addMapping(new MemoryRange(0n, PAGE), backing, BigInt(i) * PAGE, true);
    handle.map(RW);
    handles.push(handle);
  }
  return handles[count >> 1];
}

const WORDS: Record<number, string> = {
  10: "ten",
  100: "a hundred",
  1000: "a thousand",
  10000: "ten thousand",
};

for (const backed of [true, false]) {
  for (const count of [10, 100, 1000, 10000]) {
    const region = setup(count, backed);
    Deno.bench({
      // bench/run.ts reads the region count from the digits in the name:
      // only the backed (full cost) cases carry digits.
      name: backed
        ? `map/unmap pair, ${count.toLocaleString("en-US")} regions`
        : `map/unmap pair without backing, ${WORDS[count]} regions`,
      group: backed ? "backed regions" : "regions without backing",
      baseline: count === 10,
      fn() {
        region.unmap();
        region.map(RW);
      },
    });
  }
}
