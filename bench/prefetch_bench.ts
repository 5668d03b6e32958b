/**
 * Benchmark 5: build + prefetch of 1 GiB of guest RAM, then release it.
 *
 * - `prefetch_shared`: `GuestMemoryBuilder().prefetchRam(true)` (memfd
 *   backing), attached to a KVM partition, which prefetches the RAM region
 *   (KVM_PRE_FAULT_MEMORY where KVM has it, else MADV_POPULATE_WRITE).
 * - `prefetch_private`: `privateMemory(true)` (anonymous RAM in the
 *   reservation). The builder never prefetches private RAM, so the bench
 *   asks the partition to, as a VMM would.
 *
 * The target is 1.6x single-thread C (bench/baseline.c `prefetch_*`: mmap +
 * MADV_POPULATE_WRITE, + munmap, close) on this 2-core machine: the library
 * may populate on both cores; the rows measure whatever the build + attach
 * does. `prefetch_*_kvm` in C is the same sequence as ours, single-threaded.
 *
 * - `prefetch_shared_parallel` / `prefetch_private_parallel`: build, then
 *   `await manager.prefetch()` (every core populates a part at once), then
 *   attach; the two-core rows of the 1.6x target.
 *
 * The KVM partition (VM and vCPU 0) is created once, outside the timing;
 * each operation builds, attaches, prefetches, detaches and disposes (one
 * operation per sample, a few samples: each takes a second or so).
 *
 * Run: deno run --allow-ffi --allow-read --allow-write --allow-env bench/prefetch_bench.ts
 * (prints one JSON line per benchmark; see bench/bench_support.ts)
 *
 * @module
 */

import { KvmPartition } from "../kvm.ts";
import { GuestMemoryBuilder, MemoryLayout, Vtl } from "../mod.ts";
import { bench, emit, GIB, kvmAvailable, skip, summarize } from "./bench_support.ts";

const layout = MemoryLayout.fromGaps(GIB, []);
/** One warm-up operation, then three samples of one operation each. */
const SAMPLES = { batch: 1, samples: 3, minSamples: 3, budgetMs: 0, warmupMs: 0 };

if (!kvmAvailable()) {
  skip("prefetch_shared", "/dev/kvm is not available");
  skip("prefetch_private", "/dev/kvm is not available");
} else {
  const partition = KvmPartition.create();
  bench("prefetch_shared", () => {
    using manager = new GuestMemoryBuilder().prefetchRam(true).build(layout);
    using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
  }, SAMPLES);

  bench("prefetch_private", () => {
    using manager = new GuestMemoryBuilder().privateMemory(true).build(layout);
    using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
    partition.prefetchRange(0n, GIB);
  }, SAMPLES);

  /** One build + parallel prefetch + attach per sample, timed by hand (the sampler is synchronous). */
  const parallel = async (name: string, privateMemory: boolean) => {
    const samples: number[] = [];
    for (let i = 0; i < 4; i++) {
      const t0 = performance.now();
      {
        using manager = new GuestMemoryBuilder().privateMemory(privateMemory).build(layout);
        await manager.prefetch();
        using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
      }
      if (i > 0) samples.push((performance.now() - t0) * 1e6); // the first one warms up
    }
    emit(summarize(name, 1, samples));
  };
  await parallel("prefetch_shared_parallel", false);
  await parallel("prefetch_private_parallel", true);
}
