/**
 * Benchmark 6: guest memory from a Worker, and what the grace period costs.
 *
 * - `read8_worker` / `copy_out_1m_worker`: a Worker holding a shared client
 *   runs 10,000 8-byte reads (100 1 MiB copies) per call, started and
 *   awaited through an `Atomics` handshake, so the figure per access (the
 *   call's time divided by 10,000 or 100) includes a share of the
 *   handshake, which makes it an upper bound.
 * - `read8_main`: the same 10,000 reads on the main thread, for the
 *   Worker/main ratio.
 * - `region_change_shared_idle`: a PAM piece hidden and shown again
 *   (`setRamVisibility` Unmapped, then ReadWrite) with a Worker reader
 *   registered but idle: the grace period only scans the reader slots.
 * - `region_change_unshared`: the same change with nothing shared.
 * - `region_change_shared_busy`: the same with a Worker hammering 8-byte
 *   reads on other memory: grace periods have to wait for its accesses.
 *
 * Run: deno run --allow-ffi --allow-read --allow-write --allow-env bench/worker_bench.ts
 * (prints one JSON line per benchmark; see bench/bench_support.ts)
 *
 * @module
 */

import { GuestMemoryBuilder, MemoryLayout, MemoryRange, RamVisibility } from "../mod.ts";
import { bench, MIB } from "./bench_support.ts";

const PIECE = new MemoryRange(0xc0000n, 0xc4000n);

/** Commands in the control words. */
const IDLE = 0;
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
    Atomics.wait(ctl, 0, ${IDLE});
    const cmd = Atomics.load(ctl, 0);
    if (cmd === ${STOP}) break;
    if (cmd === ${READ8}) for (let i = 0; i < 10000; i++) sink += memory.readU64(0x200000);
    if (cmd === ${COPY1M}) for (let i = 0; i < 100; i++) memory.read(0x200000, big);
    if (cmd === ${HAMMER}) while (Atomics.load(ctl, 0) === ${HAMMER}) sink += memory.readU64(0x300000);
    Atomics.store(ctl, 0, ${IDLE});
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

const OPTIONS = { samples: 200, budgetMs: 300 };

bench("read8_worker", () => reader.run(READ8), { ...OPTIONS, opsPerCall: 10000 });

/** The same loop on the main thread, over the manager's own accessor. */
const mainMemory = shared.client().guestMemory();
bench("read8_main", () => {
  let sum = 0n;
  for (let i = 0; i < 10000; i++) sum += mainMemory.readU64(0x200000);
  return sum;
}, { ...OPTIONS, opsPerCall: 10000 });

bench("copy_out_1m_worker", () => reader.run(COPY1M), {
  batch: 1,
  samples: 30,
  budgetMs: 300,
  opsPerCall: 100,
});

bench("region_change_unshared", flipUnshared, OPTIONS);
bench("region_change_shared_idle", flipShared, OPTIONS);
bench("region_change_shared_busy", flipBusy, OPTIONS);

// The busy Worker goes back to waiting when its hammer loop ends, and a
// Worker blocked in Atomics.wait keeps the process alive: exit outright
// (the results are printed, synchronously, already).
reader.start(STOP);
busy.start(STOP);
Deno.exit(0);
