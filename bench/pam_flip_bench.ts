/**
 * Benchmark 2: PAM flip. A 16 MiB guest built with x86 legacy support and
 * attached to a KVM partition; one operation sets all 14 PAM-controlled
 * regions (0xa0000-0x100000) read-only, then all of them read-write again,
 * through `RamVisibilityControl.setRamVisibility`. Each change is a slot
 * delete, a VA unmap, a VA map with the new protection and a slot create;
 * bench/baseline.c `pam_flip` does the same on the same 16 slots.
 *
 * `pam_flip_ffi` makes the same syscalls on the same slots through the FFI
 * layer alone (ending in the state it started from): the difference is
 * what the library costs.
 *
 * Run: deno bench --allow-ffi --allow-read --allow-write --allow-env bench/pam_flip_bench.ts
 *
 * @module
 */

import {
  GuestMemoryBuilder,
  KvmMemFlag,
  KvmPartition,
  MemoryLayout,
  MemoryRange,
  RamVisibility,
  splitX86LegacyRam,
  Vtl,
} from "../mod.ts";
import { MIB, raw, skipWithoutKvm } from "./bench_support.ts";

const RAM = 16n * MIB;
const ignore = skipWithoutKvm("pam_flip");

let flip = (): void => {};
let rawFlip = (): void => {};
if (!ignore) {
  const manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
    MemoryLayout.fromGaps(RAM, []),
  );
  const partition = KvmPartition.create();
  manager.attachPartition(Vtl.Vtl0, partition);
  const control = manager.ramVisibilityControl();
  // Pieces 1..14: the VGA window, twelve 16 KiB pieces and the 64 KiB BIOS piece.
  const pam = splitX86LegacyRam(new MemoryRange(0n, RAM)).slice(1, 15);
  if (pam.length !== 14) throw new Error(`expected 14 PAM regions, got ${pam.length}`);
  flip = () => {
    for (const range of pam) control.setRamVisibility(range, RamVisibility.ReadOnly);
    for (const range of pam) control.setRamVisibility(range, RamVisibility.ReadWrite);
  };

  // RAM is packed in the backing from offset 0, so file offset = gpa here.
  // Kept referenced for the life of the process (it owns its descriptor).
  const backing = manager.sharedMemoryBacking()!;
  const vm = partition.vm;
  const pieces = pam.map((range) => {
    const slot = partition.slotAt(range.start);
    if (slot === undefined) throw new Error(`no memory slot at ${range}`);
    return {
      slot: slot.slot,
      gpa: range.start,
      len: range.len,
      host: manager.va.hostAddress(range.start),
    };
  });
  const rawSet = (writable: boolean) => {
    const flags = writable ? 0 : KvmMemFlag.KVM_MEM_READONLY;
    for (const p of pieces) {
      vm.setUserMemoryRegion(p.slot, 0, p.gpa, 0n, p.host);
      raw.unmap(p.host, p.len);
      raw.mapShared(p.host, p.len, backing.fd, p.gpa, writable);
      vm.setUserMemoryRegion(p.slot, flags, p.gpa, p.len, p.host);
    }
  };
  rawFlip = () => {
    rawSet(false);
    rawSet(true);
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

Deno.bench({
  name: "pam_flip_ffi",
  group: "pam_flip",
  ignore,
  n: 150,
  fn() {
    rawFlip();
  },
});
