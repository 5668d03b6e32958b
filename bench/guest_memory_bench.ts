/**
 * Benchmark 4: GuestMemory hot paths on a 64 MiB shared-memfd guest: an
 * 8-byte read, and 4 KiB and 1 MiB copies into guest memory (`write`) and
 * out of it (`read`), all at guest address 0x200000. bench/baseline.c does
 * a volatile load and memcpy on the same kind of mapping.
 *
 * @module
 */

import { GuestMemoryBuilder, MemoryLayout } from "../mod.ts";
import { MIB } from "./bench_support.ts";

const GPA = 2n * MIB;
const GPA_NUMBER = Number(GPA);

const manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(64n * MIB, []));
const memory = manager.client().guestMemory();
memory.fill(0n, 64n * MIB, 0x5a); // fault every page in before timing
const small = new Uint8Array(4096).fill(0xa5);
const large = new Uint8Array(1 << 20).fill(0xa5);

/** Results land here so the JIT cannot drop the reads. */
export let sink: bigint | number = 0;

Deno.bench({
  name: "read8",
  group: "guest_memory",
  fn() {
    sink = memory.readU64(GPA);
  },
});

Deno.bench({
  name: "read8_number",
  group: "guest_memory",
  fn() {
    sink = memory.readU64(GPA_NUMBER);
  },
});

Deno.bench({
  name: "copy_in_4k",
  group: "guest_memory",
  fn() {
    memory.write(GPA, small);
  },
});

Deno.bench({
  name: "copy_out_4k",
  group: "guest_memory",
  fn() {
    memory.read(GPA, small);
    sink = small[4095];
  },
});

Deno.bench({
  name: "copy_in_1m",
  group: "guest_memory",
  fn() {
    memory.write(GPA, large);
  },
});

Deno.bench({
  name: "copy_out_1m",
  group: "guest_memory",
  fn() {
    memory.read(GPA, large);
    sink = large[large.length - 1];
  },
});
