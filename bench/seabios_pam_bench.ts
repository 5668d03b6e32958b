/**
 * Benchmark 3: SeaBIOS's POST PAM sequence. A 128 MiB guest built with x86
 * legacy support, the BIOS image mapped high and low (`BiosRom`), attached
 * to a KVM partition. One operation is a POST's worth of PAM work: a host
 * bridge reset (every PAM piece Unmapped: the ROM shows at 0xe0000-0x100000)
 * and the four config writes SeaBIOS makes, recorded from a real boot
 * (`seabios_pam_sequence.ts`): all 13 pieces read-write, then 12 locked
 * read-only. bench/baseline.c `seabios_pam` makes, for every region change,
 * a slot delete, the VA remaps and a slot create, as the library did when
 * the row was written (checked with `strace -f`); since then a lock
 * (read-write to read-only) changes only the slot, so ours does less.
 *
 * Run: deno run --allow-ffi --allow-read --allow-write --allow-env bench/seabios_pam_bench.ts
 *
 * @module
 */

import { KvmPartition } from "../kvm.ts";
import { GuestMemoryBuilder, MemoryLayout, MemoryRange, Vtl } from "../mod.ts";
import { BiosRom, I440fxPam } from "../x86.ts";
import { bench, KVM_WARMUP_MS, kvmAvailable, MIB, skip } from "./bench_support.ts";
import { SEABIOS_POST_PAM_WRITES } from "./seabios_pam_sequence.ts";

const RAM = 128n * MIB;
if (!kvmAvailable()) {
  skip("seabios_pam", "/dev/kvm is not available");
} else {
  // Kept for the life of the bench process (released at exit).
  const manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
    MemoryLayout.fromGaps(RAM, [new MemoryRange(0xe0000000n, 0x100000000n)]),
  );
  manager.attachPartition(Vtl.Vtl0, KvmPartition.create());
  // The image's bytes do not matter here, only where it is mapped.
  BiosRom.map(manager, new Uint8Array(0x20000));
  const pam = I440fxPam.create(manager.ramVisibilityControl());
  const post = () => {
    pam.reset();
    for (const w of SEABIOS_POST_PAM_WRITES) pam.configWrite(w.offset, w.width, w.value);
  };
  post(); // from power-on to the lock state, where each operation starts
  // Short runs: bench/run.ts alternates many such rounds with the C baseline.
  bench("seabios_pam", post, { samples: 30, budgetMs: 300, warmupMs: KVM_WARMUP_MS });
}
