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
 * The KVM partition (VM and vCPU 0) is created once, outside the timing;
 * each operation builds, attaches, prefetches, detaches and disposes.
 * bench/baseline.c compares with mmap + MADV_POPULATE_WRITE (`prefetch_*`)
 * and with the same sequence as ours (`prefetch_*_kvm`).
 *
 * @module
 */

import { KvmPartition } from "../kvm.ts";
import { GuestMemoryBuilder, MemoryLayout, Vtl } from "../mod.ts";
import { GIB, skipWithoutKvm } from "./bench_support.ts";

const ignore = skipWithoutKvm("prefetch");
const layout = MemoryLayout.fromGaps(GIB, []);
const partition = ignore ? undefined : KvmPartition.create();

/** Each operation takes a second or more: a few samples are all we can afford. */
const SAMPLES = { n: 3, warmup: 1 };

Deno.bench({
  name: "prefetch_shared",
  group: "prefetch",
  ignore,
  ...SAMPLES,
  fn() {
    using manager = new GuestMemoryBuilder().prefetchRam(true).build(layout);
    using _attachment = manager.attachPartition(Vtl.Vtl0, partition!);
  },
});

Deno.bench({
  name: "prefetch_private",
  group: "prefetch",
  ignore,
  ...SAMPLES,
  fn() {
    using manager = new GuestMemoryBuilder().privateMemory(true).build(layout);
    using _attachment = manager.attachPartition(Vtl.Vtl0, partition!);
    partition!.prefetchRange(0n, GIB);
  },
});
