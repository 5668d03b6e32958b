/**
 * The guest memory stress test's main program (run in a subprocess by
 * tests/worker_stress_test.ts, so that a signal is a failed test rather
 * than a dead test runner). Two Workers hammer guest memory through a
 * shared client while this thread flips every PAM piece through ReadWrite,
 * ReadOnly and Unmapped, maps, moves and removes a device region, detaches
 * and re-attaches a KVM partition, and finally disposes the manager.
 *
 * Prints one line of counters and exits 0 when every value the workers read
 * was allowed, every failure was a GuestMemoryError, no write landed in a
 * piece while it was read-only, and the races really happened.
 *
 * Usage: deno run --allow-ffi --allow-read --allow-env main.ts [seconds] [seed]
 *
 * @module
 */

import {
  GuestMemoryBuilder,
  MemoryLayout,
  MemoryRange,
  type PartitionAttachment,
  RamVisibility,
  setWarningHandler,
  SharedMemoryBacking,
  Vtl,
} from "../../../mod.ts";
import { KvmPartition } from "../../../kvm.ts";
import { managerInternals } from "../../../manager/guest_memory_manager.ts";
import { initialWord, type StressJob, type StressReport } from "./worker.ts";

const seconds = Number(Deno.args[0] ?? "6");
const seed = Number(Deno.args[1] ?? String(Date.now() % 1_000_000));
console.log(`seed ${seed} (replay: main.ts ${seconds} ${seed})`);

const RAM_TAG = 1;
const DEVICE_TAG = 2;
const DEVICE_SIZE = 0x10000n;
const RAM_AREA = new MemoryRange(0x200000n, 0x204000n);
const LEGACY = new MemoryRange(0xa0000n, 0x100000n);
const GAP_A = 0xe0000000n;
const GAP_B = 0xe0100000n;
const PLACES = [GAP_A, GAP_B, 0xa0000n];

const pieces = [new MemoryRange(0xa0000n, 0xc0000n)];
for (let s = 0xc0000n; s < 0xf0000n; s += 0x4000n) pieces.push(new MemoryRange(s, s + 0x4000n));
pieces.push(new MemoryRange(0xf0000n, 0x100000n));

const warnings: string[] = [];
setWarningHandler((w) => void warnings.push(w.message));

const manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
  MemoryLayout.fromGaps(64n << 20n, [new MemoryRange(0xe0000000n, 0x100000000n)]),
);
const memory = manager.client().guestMemory();
for (const range of [RAM_AREA, LEGACY]) {
  for (let a = range.start; a < range.end; a += 4n) {
    memory.writeU32(a, initialWord(RAM_TAG, Number(a)));
  }
}
const pattern = new Uint8Array(Number(DEVICE_SIZE));
const patternView = new DataView(pattern.buffer);
for (let o = 0; o < pattern.length; o += 4) {
  patternView.setUint32(o, initialWord(DEVICE_TAG, o), true);
}
const backing = SharedMemoryBacking.create(DEVICE_SIZE, {
  name: "stress-device",
  contents: pattern,
});
const { control, region } = manager.deviceMemoryMapper().newRegion(DEVICE_SIZE, "stress-device");
region.map(0n, backing, 0n, DEVICE_SIZE, true);
control.mapToGuest(GAP_A, true);

const partition = KvmPartition.create();
let attachment: PartitionAttachment | undefined = manager.attachPartition(Vtl.Vtl0, partition);
const va = managerInternals(manager).va;

const share = manager.client().share();
const workerUrl = new URL("./worker.ts", import.meta.url);
const ranges: [number, number][] = [
  [Number(RAM_AREA.start), Number(RAM_AREA.end)],
  [Number(LEGACY.start), Number(LEGACY.end)],
  [Number(GAP_A), Number(GAP_A + DEVICE_SIZE)],
  [Number(GAP_B), Number(GAP_B + DEVICE_SIZE)],
];
const reports: Promise<StressReport>[] = [];
const workers: Worker[] = [];
for (const id of [0, 1]) {
  const worker = new Worker(workerUrl, { type: "module" });
  workers.push(worker);
  reports.push(
    new Promise((resolve, reject) => {
      worker.onmessage = (e: MessageEvent<StressReport>) => resolve(e.data);
      worker.onerror = (e) => reject(new Error(`worker ${id}: ${e.message}`));
    }),
  );
  worker.postMessage(
    { share, id, seed: seed * 2 + id + 1, ranges, tags: [RAM_TAG, DEVICE_TAG] } satisfies StressJob,
  );
}
// Let the workers start hammering before the changes begin.
await new Promise((r) => setTimeout(r, 300));

let changes = 0;
let readOnlyChecks = 0;
const violations: string[] = [];
const visibility = manager.ramVisibilityControl();
const end = performance.now() + seconds * 1000;
let round = 0;
while (performance.now() < end) {
  for (const piece of pieces) {
    visibility.setRamVisibility(piece, RamVisibility.ReadOnly);
    const snapshot = memory.readBytes(piece.start, piece.len);
    // The workers keep trying to write it; let them.
    for (let spin = 0; spin < 2000; spin++) memory.readU32(piece.start);
    const after = memory.readBytes(piece.start, piece.len);
    readOnlyChecks++;
    if (!snapshot.every((b, i) => after[i] === b)) {
      violations.push(`a write landed in ${piece} while it was read-only`);
    }
    visibility.setRamVisibility(piece, RamVisibility.Unmapped);
    visibility.setRamVisibility(piece, RamVisibility.ReadWrite);
    changes += 3;
  }
  const place = PLACES[round % PLACES.length];
  control.mapToGuest(place, round % 2 === 0);
  changes++;
  if (round % 3 === 2) {
    control.unmapFromGuest();
    control.mapToGuest(GAP_A, true);
    changes += 2;
  }
  if (round % 4 === 3) {
    attachment?.detach();
    attachment = manager.attachPartition(Vtl.Vtl0, partition);
    changes++;
  }
  round++;
  // Yield so the workers' messages can be handled.
  await new Promise((r) => setTimeout(r, 0));
}
const grace = va.graceStats!;
manager[Symbol.dispose]();
const results = await Promise.all(reports);
for (const worker of workers) worker.terminate();
partition[Symbol.dispose]();
backing[Symbol.dispose]();

const ok = results.reduce((n, r) => n + r.ok, 0);
const refused: Record<string, number> = {};
for (const r of results) {
  for (const [kind, n] of Object.entries(r.refused)) refused[kind] = (refused[kind] ?? 0) + n;
}
const bad = results.flatMap((r) => r.bad);
const overlapped = (refused.readOnly ?? 0) + (refused.unmapped ?? 0);
console.log(
  JSON.stringify({
    rounds: round,
    changes,
    readOnlyChecks,
    workerAccessesOk: ok,
    workerAccessesRefused: refused,
    accessesThatMetAChange: overlapped,
    gracePeriods: grace.periods,
    gracePeriodsThatWaited: grace.waited,
    stalledReaders: grace.stalled,
    warnings: warnings.length,
  }),
);
const problems = [...bad, ...violations];
if (overlapped === 0) problems.push("no worker access met a change: the race was not exercised");
if (grace.waited === 0) problems.push("no grace period had to wait: the race was not exercised");
if ((refused.disposed ?? 0) === 0) problems.push("no worker saw the manager disposed");
if (grace.stalled > 0) problems.push(`${grace.stalled} reader(s) stalled: ${warnings.join("; ")}`);
for (const p of problems.slice(0, 20)) console.log(`PROBLEM ${p}`);
Deno.exit(problems.length === 0 ? 0 : 1);
