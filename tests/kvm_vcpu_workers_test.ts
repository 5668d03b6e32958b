import assert from "node:assert/strict";
import { KvmPartition } from "../kvm.ts";
import { GuestMemoryBuilder, MemoryLayout, MemoryRange, RamVisibility, Vtl } from "../mod.ts";
import { GuestProbe } from "../testing.ts";
import {
  initialRamWord,
  type ProbeJob,
  type ProbeReady,
  type ProbeReport,
} from "./support/probe_worker.ts";
import { skipWithoutKvm } from "./support/requirements.ts";

const PIECES: MemoryRange[] = [];
for (let s = 0xc0000n; s < 0xf0000n; s += 0x4000n) PIECES.push(new MemoryRange(s, s + 0x4000n));

Deno.test({
  name: "two vCPUs in two Workers probe PAM pieces while the main thread flips them",
  ignore: skipWithoutKvm(),
  async fn() {
    using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
      MemoryLayout.fromGaps(16n << 20n, [new MemoryRange(0xe0000000n, 0x100000000n)]),
    );
    const memory = manager.client().guestMemory();
    for (const piece of PIECES) {
      for (let a = piece.start; a < piece.end; a += 4n) {
        memory.writeU32(a, initialRamWord(Number(a)));
      }
    }
    using partition = KvmPartition.create();
    using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
    using probe0 = GuestProbe.create(partition, { vcpuId: 0, codeGpa: 0xfffff000n });
    using probe1 = GuestProbe.create(partition, { vcpuId: 1, codeGpa: 0xffffe000n });

    const milliseconds = 2500;
    const workers: Worker[] = [];
    const started: Promise<void>[] = [];
    const reports = [probe0, probe1].map((probe, id) => {
      const worker = new Worker(new URL("./support/probe_worker.ts", import.meta.url), {
        type: "module",
      });
      workers.push(worker);
      let ready: () => void = () => {};
      started.push(new Promise<void>((resolve) => ready = resolve));
      const done = new Promise<ProbeReport>((resolve, reject) => {
        // The worker says when it starts probing (a Worker can take longer
        // to start than the flips last on a loaded host), then reports.
        worker.onmessage = (e: MessageEvent<ProbeReport | ProbeReady>) => {
          if ("ready" in e.data) ready();
          else resolve(e.data);
        };
        worker.onerror = (e) => reject(new Error(`worker ${id}: ${e.message}`));
      });
      worker.postMessage(
        {
          probe: probe.share(),
          id,
          pieces: PIECES.map((p) => Number(p.start)),
          milliseconds,
        } satisfies ProbeJob,
      );
      return done;
    });

    // Flip every piece RW -> RO -> Unmapped -> RW while the guests run; while
    // a piece is read-only no guest store may change it.
    const control = manager.ramVisibilityControl();
    await Promise.all(started);
    await new Promise((r) => setTimeout(r, 100));
    const end = performance.now() + milliseconds - 400;
    let flips = 0;
    const violations: string[] = [];
    while (performance.now() < end) {
      for (const piece of PIECES) {
        control.setRamVisibility(piece, RamVisibility.ReadOnly);
        const before = memory.readBytes(piece.start, 64);
        const settle = performance.now() + 0.2;
        while (performance.now() < settle) { /* the guests keep storing */ }
        const after = memory.readBytes(piece.start, 64);
        if (!before.every((b, i) => after[i] === b)) {
          violations.push(`a guest store changed ${piece} while it was read-only`);
        }
        control.setRamVisibility(piece, RamVisibility.Unmapped);
        control.setRamVisibility(piece, RamVisibility.ReadWrite);
        flips += 3;
      }
    }
    const results = await Promise.all(reports);
    for (const worker of workers) worker.terminate();

    console.log(
      JSON.stringify({ flips, results: results.map((r) => ({ ...r, bad: r.bad.length })) }),
    );
    assert.deepEqual(violations, []);
    for (const r of results) {
      assert.deepEqual(r.bad, [], `vCPU ${r.id}`);
      assert.ok(r.values > 0, `vCPU ${r.id} read RAM`);
      assert.ok(r.mmio > 0, `vCPU ${r.id} saw MMIO exits from hidden or read-only pieces`);
    }
    assert.ok(flips > 0);
  },
});
