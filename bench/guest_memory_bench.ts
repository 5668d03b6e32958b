/**
 * Benchmark 4: GuestMemory hot paths on a 64 MiB shared-memfd guest, at
 * guest address 0x200000 and up:
 *
 * - `read8` / `read8_number`: an 8-byte read (`readU64`) with a bigint or a
 *   number address; bench/baseline.c `read8` is a volatile load.
 * - `read8_dataview`: the same read (`getBigUint64`) on a plain `DataView`
 *   over a 64 MiB `ArrayBuffer`: the floor for a JavaScript 8-byte read.
 *   The library has no public view of its mappings, so a plain buffer of
 *   the same size is the comparison the target is judged on.
 * - `copy_in_4k` / `copy_out_4k` / `copy_in_1m` / `copy_out_1m`: copies into
 *   guest memory (`write`) and out of it (`read`); C does memcpy on the same
 *   kind of mapping.
 *
 * Each 8-byte read takes its address from 64 consecutive words in turn (on
 * both sides of the DataView comparison), so the JIT cannot hoist the load.
 *
 * Run: deno run --allow-ffi --allow-read --allow-write --allow-env bench/guest_memory_bench.ts
 * (prints one JSON line per benchmark; see bench/bench_support.ts)
 *
 * @module
 */

import { GuestMemoryBuilder, MemoryLayout } from "../mod.ts";
import { bench, MIB } from "./bench_support.ts";

const SIZE = 64n * MIB;
const GPA = 2n * MIB;
const GPA_NUMBER = Number(GPA);

const manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(SIZE, []));
const memory = manager.client().guestMemory();
memory.fill(0n, SIZE, 0x5a); // fault every page in before timing
const small = new Uint8Array(4096).fill(0xa5);
const large = new Uint8Array(1 << 20).fill(0xa5);
const plain = new DataView(new ArrayBuffer(Number(SIZE)));
new Uint8Array(plain.buffer).fill(0x5a);

let word = 0;
const OPTIONS = { samples: 300, budgetMs: 300 };

bench("read8", () => {
  word = (word + 8) & 0x1f8;
  return memory.readU64(GPA + BigInt(word));
}, OPTIONS);

bench("read8_number", () => {
  word = (word + 8) & 0x1f8;
  return memory.readU64(GPA_NUMBER + word);
}, OPTIONS);

bench("read8_dataview", () => {
  word = (word + 8) & 0x1f8;
  return plain.getBigUint64(GPA_NUMBER + word, true);
}, OPTIONS);

bench("copy_in_4k", () => memory.write(GPA, small), OPTIONS);

bench("copy_out_4k", () => {
  memory.read(GPA, small);
  return small[4095];
}, OPTIONS);

bench("copy_in_1m", () => memory.write(GPA, large), OPTIONS);

bench("copy_out_1m", () => {
  memory.read(GPA, large);
  return large[large.length - 1];
}, OPTIONS);
