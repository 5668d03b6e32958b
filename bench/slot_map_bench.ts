/**
 * Benchmark 1: memory-slot map throughput through the whole stack. One
 * operation maps a 2 MiB region and unmaps it again: RegionManager ->
 * VaMapper (mmap MAP_SHARED|MAP_FIXED, then PROT_NONE back) and
 * PartitionMapper -> KvmPartition (KVM_SET_USER_MEMORY_REGION create, then
 * delete). bench/baseline.c `slot_map` makes the same four syscalls.
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
import { MIB, RAM_PARAMS, skipWithoutKvm } from "./bench_support.ts";

const SLOT_GPA = 16n * MIB;
const SLOT_LEN = 2n * MIB;
const ignore = skipWithoutKvm("slot_map");

let cycle = (): void => {};
if (!ignore) {
  const va = VaMapper.reserve(64n * MIB, 2n * MIB);
  const backing = OwnedFd.memfd("guest-ram", 0x1 /* MFD_CLOEXEC */);
  backing.truncate(SLOT_LEN);
  const regions = new RegionManager(va);
  regions.addPartition(new PartitionMapper(KvmPartition.create(), va, 0n, false));
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
}

Deno.bench({
  name: "slot_map",
  group: "slot_map",
  ignore,
  // A fixed, short run: bench/run.ts alternates many such rounds with the C baseline.
  n: 3000,
  fn() {
    cycle();
  },
});
