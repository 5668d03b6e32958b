/**
 * Benchmark 6: guest memory from a Worker, and what the grace period costs.
 *
 * - `read8_worker_x10000` / `copy_out_1m_worker_x100`: a Worker holding a
 *   shared client runs 10,000 8-byte reads (100 1 MiB copies) per operation,
 *   started and awaited through an `Atomics` handshake, so the figure per
 *   access (bench/run.ts divides by the `_xN` suffix) includes a share of
 *   the handshake, which makes it an upper bound.
 * - `read8_main_x10000`: the same 10,000 reads on the main thread, for the
 *   Worker/main ratio.
 * - `region_change_shared_idle`: a PAM piece hidden and shown again
 *   (`setRamVisibility` Unmapped, then ReadWrite) with a Worker reader
 *   registered but idle: the grace period only scans the reader slots.
 * - `region_change_unshared`: the same change with nothing shared.
 * - `region_change_shared_busy`: the same with a Worker hammering 8-byte
 *   reads on other memory: grace periods have to wait for its accesses.
 *
 * Run: deno bench --allow-ffi --allow-read --allow-write --allow-env bench/worker_bench.ts
 *
 * @module
 */

import { GuestMemoryBuilder, MemoryLayout, MemoryRange, RamVisibility } from "../mod.ts";
import { MIB } from "./bench_support.ts";

const PIECE = new MemoryRange(0xc0000n, 0xc4000n);

/** Commands in the control words. */
const READ8 = 1;
const COPY1M = 2;
const HAMMER = 3;
const STOP = 4;

function guest() {
  const manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
    MemoryLayout.fromGaps(64n * MIB, []),
  );
  manager.client().guestMemory().fill(0n, 64n * MIB, 0x5a);
  return manager;
}

const WORKER_SOURCE = `
import { GuestMemoryClient } from ${JSON.stringify(new URL("../mod.ts", import.meta.url).href)};
self.onmessage = (e) => {
  const { share, control } = e.data;
  const ctl = new Int32Array(control);
  const memory = GuestMemoryClient.fromShare(share, { name: "bench worker" }).guestMemory();
  const big = new Uint8Array(1 << 20);
  let sink = 0n;
  for (;;) {
    Atomics.wait(ctl, 0, 0);
    const cmd = Atomics.load(ctl, 0);
    if (cmd === ${STOP}) break;
    if (cmd === ${READ8}) for (let i = 0; i < 10000; i++) sink += memory.readU64(0x200000);
    if (cmd === ${COPY1M}) for (let i = 0; i < 100; i++) memory.read(0x200000, big);
    if (cmd === ${HAMMER}) while (Atomics.load(ctl, 0) === ${HAMMER}) sink += memory.readU64(0x300000);
    Atomics.store(ctl, 0, 0);
    Atomics.store(ctl, 1, Atomics.load(ctl, 1) + 1);
    Atomics.notify(ctl, 1);
  }
  self.postMessage(String(sink));
};`;

/** A Worker with a shared client of `manager`, driven through two control words. */
function startWorker(manager: ReturnType<typeof guest>) {
  const control = new SharedArrayBuffer(8);
  const ctl = new Int32Array(control);
  const url = `data:text/javascript,${encodeURIComponent(WORKER_SOURCE)}`;
  const worker = new Worker(url, { type: "module" });
  worker.postMessage({ share: manager.client().share(), control });
  /** Runs `cmd` in the Worker and waits until it is done. */
  const run = (cmd: number) => {
    const done = Atomics.load(ctl, 1);
    Atomics.store(ctl, 0, cmd);
    Atomics.notify(ctl, 0);
    while (Atomics.load(ctl, 1) === done) Atomics.wait(ctl, 1, done, 1000);
  };
  /** Starts `cmd` without waiting (HAMMER runs until the next command). */
  const start = (cmd: number) => {
    Atomics.store(ctl, 0, cmd);
    Atomics.notify(ctl, 0);
  };
  return { worker, run, start, ctl };
}

const shared = guest();
const reader = startWorker(shared);
reader.run(READ8); // wait until the Worker is up and has its reader slot
reader.run(COPY1M);

const unshared = guest();
const busyGuest = guest();
const busy = startWorker(busyGuest);
busy.run(READ8);
busy.start(HAMMER);

const flip = (manager: ReturnType<typeof guest>) => {
  const control = manager.ramVisibilityControl();
  return () => {
    control.setRamVisibility(PIECE, RamVisibility.Unmapped);
    control.setRamVisibility(PIECE, RamVisibility.ReadWrite);
  };
};
const flipShared = flip(shared);
const flipUnshared = flip(unshared);
const flipBusy = flip(busyGuest);

Deno.bench({
  name: "read8_worker_x10000",
  group: "worker",
  n: 2000,
  fn() {
    reader.run(READ8);
  },
});

/** The same loop on the main thread, over the manager's own accessor. */
const mainMemory = shared.client().guestMemory();
export let sink = 0n;

Deno.bench({
  name: "read8_main_x10000",
  group: "worker",
  n: 2000,
  fn() {
    for (let i = 0; i < 10000; i++) sink += mainMemory.readU64(0x200000);
  },
});

Deno.bench({
  name: "copy_out_1m_worker_x100",
  group: "worker",
  n: 30,
  fn() {
    reader.run(COPY1M);
  },
});

Deno.bench({
  name: "region_change_unshared",
  group: "grace",
  n: 2000,
  fn() {
    flipUnshared();
  },
});

Deno.bench({
  name: "region_change_shared_idle",
  group: "grace",
  n: 2000,
  fn() {
    flipShared();
  },
});

Deno.bench({
  name: "region_change_shared_busy",
  group: "grace",
  n: 2000,
  fn() {
    flipBusy();
  },
});

globalThis.addEventListener("unload", () => {
  reader.start(STOP);
  busy.start(STOP);
});
