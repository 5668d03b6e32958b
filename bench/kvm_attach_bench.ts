/**
 * Benchmark 8: attaching and detaching a KVM partition to a guest of 10,000
 * device regions (bench/bench_support.ts `deviceGuest`: 1 MiB of RAM and
 * 10,000 one-page regions, alternating read-only and writable, so 10,001
 * KVM slots).
 *
 * Each sample times `manager.attachPartition` on a fresh `KvmPartition`
 * (`kvm_attach_10000`: every slot created) and then `PartitionAttachment.detach()`
 * (`kvm_detach_10000`: every slot deleted); creating and disposing the
 * partition are left out. bench/baseline.c `kvm_attach_detach_10000` times
 * creating and deleting the same 10,001 slots on the same layout. Target:
 * detach within 1.2x of C (C time / our time >= 1 / 1.2).
 *
 * Run: deno run --allow-ffi --allow-read --allow-write --allow-env bench/kvm_attach_bench.ts
 * (prints one JSON line per benchmark; see bench/bench_support.ts)
 *
 * @module
 */

import { KvmPartition } from "../kvm.ts";
import { Vtl } from "../mod.ts";
import { deviceGuest, emit, kvmAvailable, skip, summarize } from "./bench_support.ts";

const COUNT = 10000;
/** Samples per run, after one warm-up attach and detach. */
const SAMPLES = 5;

/** KVM's memory slots per VM here. */
function slotsHere(): number {
  using partition = KvmPartition.create();
  return partition.maxSlots;
}

if (!kvmAvailable()) {
  skip(`kvm_attach_${COUNT}`, "/dev/kvm is not available");
  skip(`kvm_detach_${COUNT}`, "/dev/kvm is not available");
} else if (slotsHere() < COUNT + 1) {
  skip(`kvm_attach_${COUNT}`, "KVM has too few memory slots here");
  skip(`kvm_detach_${COUNT}`, "KVM has too few memory slots here");
} else {
  using guest = deviceGuest(COUNT, true);
  const attach: number[] = [];
  const detach: number[] = [];
  for (let i = 0; i <= SAMPLES; i++) {
    using partition = KvmPartition.create();
    const t0 = performance.now();
    const attachment = guest.manager.attachPartition(Vtl.Vtl0, partition);
    const t1 = performance.now();
    attachment.detach();
    const t2 = performance.now();
    if (i === 0) continue; // warm-up
    attach.push((t1 - t0) * 1e6);
    detach.push((t2 - t1) * 1e6);
  }
  emit(summarize(`kvm_attach_${COUNT}`, 1, attach));
  emit(summarize(`kvm_detach_${COUNT}`, 1, detach));
}
