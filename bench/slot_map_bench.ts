/**
 * Benchmark 1: memory-slot map throughput through the whole stack. One
 * operation maps a 2 MiB region and unmaps it again: RegionManager ->
 * VaMapper (mmap MAP_SHARED|MAP_FIXED, then PROT_NONE back) and
 * PartitionMapper -> KvmPartition (KVM_SET_USER_MEMORY_REGION create, then
 * delete). bench/baseline.c `slot_map` makes the same four syscalls.
 *
 * `slot_map_ffi` makes those four syscalls through the FFI layer alone, in
 * the same process and VM: the difference is what the library costs.
 *
 * Run: deno bench --allow-ffi --allow-read --allow-write --allow-env bench/slot_map_bench.ts
 *
 * @module
 */

import {
  KvmPartition,
  MemoryRange,
  OwnedFd,
  PartitionMapper,
  RegionManager,
  VaMapper,
} from "../mod.ts";
import { MIB, RAM_PARAMS, raw, skipWithoutKvm } from "./bench_support.ts";

const SLOT_GPA = 16n * MIB;
const RAW_GPA = 32n * MIB;
const SLOT_LEN = 2n * MIB;
/** Slot number of the raw cycle, far above anything the partition hands out here. */
const RAW_SLOT = 100;
const ignore = skipWithoutKvm("slot_map");

let cycle = (): void => {};
let rawCycle = (): void => {};
if (!ignore) {
  const va = VaMapper.reserve(64n * MIB, 2n * MIB);
  const backing = OwnedFd.memfd("guest-ram", 0x1 /* MFD_CLOEXEC */);
  backing.truncate(SLOT_LEN);
  const regions = new RegionManager(va);
  const partition = KvmPartition.create();
  regions.addPartition(new PartitionMapper(partition, va, 0n, false));
  const region = regions.newRegion(
    "bench",
    new MemoryRange(SLOT_GPA, SLOT_GPA + SLOT_LEN),
    0,
    false,
  );
  region.addMapping(new MemoryRange(0n, SLOT_LEN), backing, 0n, true);
  cycle = () => {
    region.map(RAM_PARAMS);
    region.unmap();
  };
  // Outside every region, so the library never sees these.
  const vm = partition.vm;
  const host = va.hostAddress(RAW_GPA);
  rawCycle = () => {
    raw.mapShared(host, SLOT_LEN, backing.fd, 0n, true);
    vm.setUserMemoryRegion(RAW_SLOT, 0, RAW_GPA, SLOT_LEN, host);
    vm.setUserMemoryRegion(RAW_SLOT, 0, RAW_GPA, 0n, host);
    raw.unmap(host, SLOT_LEN);
  };
}

// Fixed, short runs: bench/run.ts alternates many such rounds with the C baseline.
Deno.bench({
  name: "slot_map",
  group: "slot_map",
  ignore,
  n: 3000,
  fn() {
    cycle();
  },
});

Deno.bench({
  name: "slot_map_ffi",
  group: "slot_map",
  ignore,
  n: 3000,
  fn() {
    rawCycle();
  },
});
