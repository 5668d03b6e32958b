/**
 * The host dirty log (the bitmap `GuestMemory` marks host writes in, from
 * any thread): marking and draining against a model, its shape check, and
 * draining while two Workers mark pages of the same words, where every
 * mark that completed before a drain must be in it or an earlier one. The
 * seed is printed; MEMBACKING_DIRTY_LOG_SEED=<n> replays a run.
 *
 * @module
 */

import assert from "node:assert/strict";
import { PageBitmap } from "../collections/_page_bitmap.ts";
import { HostDirtyLog } from "../mapping/_host_dirty_log.ts";
import { seededRandom } from "./support/seeded_random.ts";

const random = seededRandom("MEMBACKING_DIRTY_LOG_SEED", "host dirty log");

for (const shared of [false, true]) {
  Deno.test(`host dirty log against a model (${shared ? "shared" : "one thread"})`, () => {
    const { below, chance } = random;
    // 300 MiB and 12 KiB: the last word and summary word are partial.
    const size = 300n * (1n << 20n) + 12288n;
    const pages = Number(size / 4096n);
    const log = HostDirtyLog.create(size);
    if (shared) log.markShared();
    assert.equal(log.words.length, Math.ceil(pages / 32));
    assert.equal(log.summary.length, Math.ceil(log.words.length / 32));
    const into = new PageBitmap();
    const model = new Set<number>();
    for (let round = 0; round < 60; round++) {
      for (let i = below(chance(20) ? 2000 : 50); i > 0; i--) {
        const address = below(pages) * 4096 + below(4096);
        const length = Math.min(1 + below(chance(10) ? 100_000 : 9000), Number(size) - address);
        log.mark(address, length);
        for (
          let p = Math.floor(address / 4096);
          p <= Math.floor((address + length - 1) / 4096);
          p++
        ) {
          model.add(p);
        }
      }
      log.drainInto(into);
      const context = `round ${round}, seed ${random.seed}`;
      assert.deepEqual(into.pages(), [...model].sort((a, b) => a - b), context);
      // Drained: nothing is left in the log, header apart.
      assert.ok(log.words.every((w) => w === 0), context);
      assert.ok(log.summary.every((w) => w === 0), context);
      assert.equal(log.flag[1], 0, context);
      if (chance(30)) {
        into.clear();
        model.clear();
      }
    }
  });
}

Deno.test("host dirty log: shape of a shared buffer", () => {
  const log = HostDirtyLog.create(1n << 30n);
  assert.equal(log.words.length, 8192);
  assert.equal(log.summary.length, 256);
  assert.equal(log.buffer.byteLength, 16 + 4 * (8192 + 256));
  assert.equal(HostDirtyLog.isLogBuffer(log.buffer), true);
  assert.equal(HostDirtyLog.isLogBuffer(HostDirtyLog.create(0n).buffer), true);
  assert.equal(HostDirtyLog.isLogBuffer(new SharedArrayBuffer(16 + 4 * 8192)), false);
  assert.equal(HostDirtyLog.isLogBuffer(new SharedArrayBuffer(8)), false);
  assert.equal(HostDirtyLog.isLogBuffer(new ArrayBuffer(16)), false);
  const negative = new SharedArrayBuffer(16);
  new Int32Array(negative)[2] = -1;
  assert.equal(HostDirtyLog.isLogBuffer(negative), false);
  // A view on another thread sees the same words.
  const other = new HostDirtyLog(log.buffer);
  other.mark(0x5000, 1);
  const into = new PageBitmap();
  log.drainInto(into);
  assert.deepEqual(into.pages(), [5]);
});

Deno.test("host dirty log: drains racing with two marking Workers lose no completed mark", async () => {
  const { below } = random;
  const pages = 1 << 16; // 256 MiB
  const log = HostDirtyLog.create(BigInt(pages) * 4096n);
  log.markShared();
  // Both Workers mark pages of the same words (even and odd pages).
  const all = [...new Set(Array.from({ length: 40_000 }, () => below(pages)))];
  const jobs = [all.filter((p) => p % 2 === 0), all.filter((p) => p % 2 === 1)];
  const progress = new Int32Array(new SharedArrayBuffer(20));
  const workers = jobs.map(() =>
    new Worker(new URL("./support/dirty_log_worker.ts", import.meta.url), { type: "module" })
  );
  try {
    workers.forEach((worker, index) =>
      worker.postMessage({
        log: log.buffer,
        progress: progress.buffer,
        index,
        pages: jobs[index],
        marksPerDrain: 50,
      })
    );
    const drained = new PageBitmap();
    const checked = [0, 0];
    let drains = 0;
    let racing = 0; // drains while a Worker was marking
    let both = 0; // while both were
    const deadline = Date.now() + 60_000;
    // Start both at once, then drain without a pause until they are done.
    while (Atomics.load(progress, 2) < 2) {
      assert.ok(Date.now() < deadline, "the workers did not start");
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    Atomics.store(progress, 3, 1);
    Atomics.notify(progress, 3);
    for (;;) {
      const done = jobs.map((_, i) => Atomics.load(progress, i));
      log.drainInto(drained);
      drains++;
      Atomics.store(progress, 4, drains);
      const marking = done.map((n, i) => n > 0 && n < jobs[i].length);
      if (marking.some((m) => m)) racing++;
      if (marking.every((m) => m)) both++;
      // Every mark published before this drain began is drained by now.
      for (let i = 0; i < jobs.length; i++) {
        for (; checked[i] < done[i]; checked[i]++) {
          const page = jobs[i][checked[i]];
          assert.ok(drained.has(page), `page ${page} of worker ${i} lost, seed ${random.seed}`);
        }
      }
      if (done.every((n, i) => n === jobs[i].length)) break;
      assert.ok(Date.now() < deadline, "the workers did not finish");
    }
    log.drainInto(drained);
    assert.deepEqual(drained.pages(), all.sort((a, b) => a - b));
    // The Workers wait for the drains (at most 50 marks per drain), so
    // hundreds of drains meet a Worker marking whatever the scheduling;
    // how many meet both depends on it (three threads, maybe two cores).
    assert.ok(racing >= 300, `only ${racing} drains raced with the Workers' marks`);
    console.log(`${drains} drains, ${racing} while a Worker marked, ${both} while both did`);
  } finally {
    for (const worker of workers) worker.terminate();
  }
});
