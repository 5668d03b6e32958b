/**
 * Benchmark 2: PAM flip. A 16 MiB guest built with x86 legacy support and
 * attached to a KVM partition; one operation sets all 14 PAM-controlled
 * regions (0xa0000-0x100000) read-only, then all of them read-write again,
 * through `RamVisibilityControl.setRamVisibility`. Each change is a slot
 * delete, a VA unmap, a VA map with the new protection and a slot create;
 * bench/baseline.c `pam_flip` does the same on the same 16 slots.
 *
 * Run: deno bench --allow-ffi --allow-read --allow-write --allow-env bench/pam_flip_bench.ts
 *
 * @module
 */

import { KvmPartition } from "../kvm.ts";
import { GuestMemoryBuilder, MemoryLayout, RamVisibility, Vtl } from "../mod.ts";
import { MIB, pamRanges, skipWithoutKvm } from "./bench_support.ts";

const RAM = 16n * MIB;
const ignore = skipWithoutKvm("pam_flip");

let flip = (): void => {};
if (!ignore) {
  const manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
    MemoryLayout.fromGaps(RAM, []),
  );
  const partition = KvmPartition.create();
  manager.attachPartition(Vtl.Vtl0, partition);
  const control = manager.ramVisibilityControl();
  const pam = pamRanges();
  flip = () => {
    for (const range of pam) control.setRamVisibility(range, RamVisibility.ReadOnly);
    for (const range of pam) control.setRamVisibility(range, RamVisibility.ReadWrite);
  };
}

// Fixed, short runs: bench/run.ts alternates many such rounds with the C baseline.
Deno.bench({
  name: "pam_flip",
  group: "pam_flip",
  ignore,
  n: 150,
  fn() {
    flip();
  },
});
