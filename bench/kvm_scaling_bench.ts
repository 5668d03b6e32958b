/**
 * Benchmark 7: region operations with a real KVM partition attached, as the
 * number of regions grows. Each case is a guest of 1 MiB of RAM and N
 * one-page device regions right above it (bench/bench_support.ts
 * `deviceGuest`, alternating read-only and writable so that each region is
 * one KVM slot), attached to a `KvmPartition`; N is 10, 1,000, 10,000 and
 * 30,000 (KVM here has 32,764 slots).
 *
 * - `kvm_scale_N`: one operation unmaps the lowest device region from the
 *   guest and maps it back (`unmapFromGuest`, `mapToGuest`): a slot delete
 *   and a PROT_NONE mmap, then an mmap and a slot create, with N slots
 *   present. bench/baseline.c `kvm_scale_N` makes the same calls on the
 *   same layout. Target: the 30,000-region operation at most 1.2x the
 *   10-region one (per round, then the median).
 *
 * One case at a time is built, measured and disposed (a VM with 30,000
 * slots takes seconds to fill and empty).
 *
 * Run: deno run --allow-ffi --allow-read --allow-write --allow-env bench/kvm_scaling_bench.ts
 * (prints one JSON line per benchmark; see bench/bench_support.ts)
 *
 * @module
 */

import { KvmPartition } from "../kvm.ts";
import { Vtl } from "../mod.ts";
import {
  bench,
  deviceGuest,
  KVM_ROW_WARMUP_MS,
  KVM_WARMUP_MS,
  kvmAvailable,
  skip,
} from "./bench_support.ts";

/** The region counts. */
const COUNTS = [10, 1000, 10000, 30000];

if (!kvmAvailable()) {
  for (const count of COUNTS) skip(`kvm_scale_${count}`, "/dev/kvm is not available");
} else {
  for (const count of COUNTS) {
    using partition = KvmPartition.create();
    if (count + 1 > partition.maxSlots) {
      skip(`kvm_scale_${count}`, `KVM has ${partition.maxSlots} memory slots here`);
      continue;
    }
    using guest = deviceGuest(count, true);
    guest.manager.attachPartition(Vtl.Vtl0, partition);
    const control = guest.controls[0];
    const gpa = guest.gpa(0);
    const writable = guest.writable(0);
    bench(`kvm_scale_${count}`, () => {
      control.unmapFromGuest();
      control.mapToGuest(gpa, writable);
    }, {
      samples: 200,
      budgetMs: 300,
      warmupMs: count === COUNTS[0] ? KVM_WARMUP_MS : KVM_ROW_WARMUP_MS,
    });
  }
}
