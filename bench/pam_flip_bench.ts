/**
 * Benchmark 2: PAM flip. A 16 MiB guest built with x86 legacy support and
 * attached to a KVM partition; one operation sets all 14 PAM-controlled
 * regions (0xa0000-0x100000) read-only, then all of them read-write again,
 * through `RamVisibilityControl.setRamVisibility`. Each change is a slot
 * delete, a VA unmap, a VA map with the new protection and a slot create;
 * bench/baseline.c `pam_flip` does the same on the same 16 slots.
 *
 * @module
 */

import {
  GuestMemoryBuilder,
  KvmPartition,
  MemoryLayout,
  MemoryRange,
  RamVisibility,
  splitX86LegacyRam,
  Vtl,
} from "../mod.ts";
import { MIB, skipWithoutKvm } from "./bench_support.ts";

const RAM = 16n * MIB;
const ignore = skipWithoutKvm("pam_flip");

let flip = (): void => {};
if (!ignore) {
  const manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
    MemoryLayout.fromGaps(RAM, []),
  );
  manager.attachPartition(Vtl.Vtl0, KvmPartition.create());
  const control = manager.ramVisibilityControl();
  // Pieces 1..14: the VGA window, twelve 16 KiB pieces and the 64 KiB BIOS piece.
  const pam = splitX86LegacyRam(new MemoryRange(0n, RAM)).slice(1, 15);
  if (pam.length !== 14) throw new Error(`expected 14 PAM regions, got ${pam.length}`);
  flip = () => {
    for (const range of pam) control.setRamVisibility(range, RamVisibility.ReadOnly);
    for (const range of pam) control.setRamVisibility(range, RamVisibility.ReadWrite);
  };
}

Deno.bench({
  name: "pam_flip",
  group: "pam_flip",
  ignore,
  // A fixed, short run: bench/run.ts alternates many such rounds with the C baseline.
  n: 150,
  fn() {
    flip();
  },
});
