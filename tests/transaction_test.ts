/**
 * Transactions of region changes, checked against a twin: the same random
 * operations run on two region managers, one applying every change at
 * once, the other inside transactions of random length. Whenever no
 * transaction is open, both must show the same thing everywhere (regions,
 * host mapping table, partition map, the DMA target's mapped ranges);
 * inside a transaction, the batched one's host side must not have moved.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { MemoryRange } from "../layout/memory_range.ts";
import { setWarningHandler } from "../diagnostics/warnings.ts";
import { arm, disarm, nameIoctls } from "../ffi/_fault_injection.ts";
import { Errno } from "../ffi/_errno.ts";
import { SyscallError } from "../ffi/syscall_error.ts";
import { KvmIoctl } from "../kvm/kvm_constants.ts";
import { KvmPartition } from "../kvm/kvm_partition.ts";
import { PartitionMapper } from "../partition/_partition_mapper.ts";
import type { RegionHandle } from "../regions/_region_handle.ts";
import { RegionError } from "../regions/region_error.ts";
import { Injector, NEVER_FAULTED, processState, slotState } from "./support/fault_injector.ts";
import { vaProtections } from "./support/proc_maps.ts";
import { skipWithoutKvm } from "./support/requirements.ts";
import { r, RecordingDmaTarget, RegionFixture, RWX, RX } from "./support/region_fixture.ts";
import { testSeed } from "./support/seeded_random.ts";

const PAGE = 0x1000;
const SIZE = 0x40000;

/** The DMA target's live ranges, replaying its log. */
function dmaLive(target: RecordingDmaTarget): string[] {
  const live = new Set<string>();
  for (const event of target.events) {
    const [kind, range] = event.split(" ");
    if (kind === "map") live.add(range);
    else {
      const [s, e] = range.split("-").map((x) => BigInt(x));
      for (const key of [...live]) {
        const [ks, ke] = key.split("-").map((x) => BigInt(x));
        if (ks >= s && ke <= e) live.delete(key);
      }
    }
  }
  return [...live].sort();
}

interface Side {
  readonly f: RegionFixture;
  readonly dma: RecordingDmaTarget;
  readonly regions: RegionHandle[];
}

/** A manager over a fresh fixture, with a recording DMA target. */
function newSide(): Side {
  const f = new RegionFixture(BigInt(SIZE));
  const dma = new RecordingDmaTarget();
  f.manager.addDmaTarget(dma, false);
  return { f, dma, regions: [] };
}

function host(side: Side): unknown {
  return {
    va: side.f.va.entries().map((e) => `${e.range} ${e.writable} ${e.fileOffset}`),
    partition: side.f.partitionMap(),
    dma: dmaLive(side.dma),
  };
}

function everything(side: Side): unknown {
  return { host: host(side), regions: side.f.manager.inspect() };
}

type Op =
  | { k: "add"; start: number; len: number; prio: number }
  | { k: "map"; i: number; w: boolean }
  | { k: "unmap"; i: number }
  | { k: "remove"; i: number }
  | { k: "addMapping"; i: number; page: number; len: number; w: boolean }
  | { k: "removeMappings"; i: number; page: number; len: number }
  | { k: "begin" }
  | { k: "end" };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    k: fc.constant("add" as const),
    start: fc.integer({ min: 0, max: SIZE / PAGE - 1 }),
    len: fc.integer({ min: 1, max: 16 }),
    prio: fc.constantFrom(0, 1, 2, 255),
  }),
  fc.record({ k: fc.constant("map" as const), i: fc.nat(), w: fc.boolean() }),
  fc.record({ k: fc.constant("map" as const), i: fc.nat(), w: fc.boolean() }),
  fc.record({ k: fc.constant("unmap" as const), i: fc.nat() }),
  fc.record({ k: fc.constant("remove" as const), i: fc.nat() }),
  fc.record({
    k: fc.constant("addMapping" as const),
    i: fc.nat(),
    page: fc.nat({ max: 15 }),
    len: fc.integer({ min: 1, max: 4 }),
    w: fc.boolean(),
  }),
  fc.record({
    k: fc.constant("removeMappings" as const),
    i: fc.nat(),
    page: fc.nat({ max: 15 }),
    len: fc.integer({ min: 1, max: 16 }),
  }),
  fc.record({ k: fc.constant("begin" as const) }),
  fc.record({ k: fc.constant("end" as const) }),
);

Deno.test("transactions apply the net result of the changes made in them", () => {
  const seed = testSeed("MEMBACKING_TX_SEED", "transaction");
  let operations = 0;
  let batchedChanges = 0;
  fc.assert(
    fc.property(fc.array(op, { minLength: 30, maxLength: 120 }), (ops) => {
      const direct = newSide();
      const batched = newSide();
      const open: Disposable[] = [];
      let frozen: unknown;
      try {
        for (const o of ops) {
          operations++;
          if (o.k === "begin") {
            if (open.length === 0) frozen = host(batched);
            open.push(batched.f.manager.beginTransaction());
            continue;
          }
          if (o.k === "end") {
            open.pop()?.[Symbol.dispose]();
            if (open.length === 0) assert.deepEqual(everything(batched), everything(direct));
            continue;
          }
          const results = [direct, batched].map((side) => {
            try {
              switch (o.k) {
                case "add": {
                  const range = r(o.start * PAGE, Math.min(SIZE, (o.start + o.len) * PAGE));
                  const handle = side.f.manager.newRegion("r", range, o.prio, true);
                  // Mapped in full, or only its first page (room for addMapping).
                  const len = o.len % 2 === 0 ? range.len : BigInt(PAGE);
                  handle.addMapping(new MemoryRange(0n, len), side.f.backing, range.start, true);
                  side.regions.push(handle);
                  return "ok";
                }
                case "addMapping":
                case "removeMappings": {
                  const handle = side.regions[o.i % Math.max(1, side.regions.length)];
                  if (handle === undefined) return "none";
                  const start = BigInt(o.page * PAGE) % handle.range.len;
                  const end = start + BigInt(o.len * PAGE);
                  const inRegion = new MemoryRange(
                    start,
                    end < handle.range.len ? end : handle.range.len,
                  );
                  if (o.k === "addMapping") {
                    handle.addMapping(inRegion, side.f.backing, handle.range.start + start, o.w);
                  } else handle.removeMappings(inRegion);
                  return "ok";
                }
                case "map":
                case "unmap":
                case "remove": {
                  const handle = side.regions[o.i % Math.max(1, side.regions.length)];
                  if (handle === undefined) return "none";
                  if (o.k === "map") handle.map(o.w ? RWX : RX);
                  else if (o.k === "unmap") handle.unmap();
                  else handle[Symbol.dispose]();
                  if (open.length > 0) batchedChanges++;
                  return "ok";
                }
              }
            } catch (error) {
              return `${(error as Error).name}: ${(error as Error).message}`;
            }
          });
          assert.equal(results[1], results[0], JSON.stringify(o));
          // A mapping change of a region the host shows lets the host catch up first.
          if (open.length > 0 && (o.k === "addMapping" || o.k === "removeMappings")) {
            frozen = host(batched);
          }
          if (open.length > 0) {
            assert.deepEqual(host(batched), frozen, "host moved mid-transaction");
          } else assert.deepEqual(everything(batched), everything(direct));
        }
        while (open.length > 0) open.pop()![Symbol.dispose]();
        assert.deepEqual(everything(batched), everything(direct));
      } finally {
        direct.f[Symbol.dispose]();
        batched.f[Symbol.dispose]();
      }
    }),
    { seed, numRuns: 150 },
  );
  console.log(`${operations} operations, ${batchedChanges} inside transactions`);
  assert.ok(batchedChanges > 500);
});

/**
 * The KVM slots give the guest what the recording partition says: every
 * mapped range inside one slot with its writability and host addresses, no
 * slot outside them (batches merge adjacent ranges into one slot).
 */
function checkSlotsCover(kvm: KvmPartition, f: RegionFixture): void {
  const mappings = f.partition.mappings();
  let covered = 0n;
  for (const m of mappings) {
    const s = kvm.slotAt(m.gpa);
    assert.ok(s !== undefined && s.gpa + s.size >= m.gpa + m.size, `no slot covers ${m.gpa}`);
    assert.equal(s.readonly, !m.writable, `slot ${s.slot} writability`);
    assert.equal(s.hostAddress + (m.gpa - s.gpa), m.hostAddress, `slot ${s.slot} host address`);
    covered += m.size;
  }
  assert.equal(kvm.slots().reduce((sum, s) => sum + s.size, 0n), covered, "slots beyond mappings");
}

/** One change inside a transaction that makes no system call until the commit. */
type TxOp = Extract<Op, { k: "add" | "map" | "unmap" | "remove" }>;

const txOp = op.filter((o): o is TxOp =>
  o.k === "add" || o.k === "map" || o.k === "unmap" || o.k === "remove"
);

/** Runs `o` on `regions` of `f` (refusals by the rules are returned, not thrown). */
function runTxOp(f: RegionFixture, regions: RegionHandle[], o: TxOp): string {
  try {
    if (o.k === "add") {
      const range = r(o.start * PAGE, Math.min(SIZE, (o.start + o.len) * PAGE));
      const handle = f.manager.newRegion("r", range, o.prio, true);
      handle.addMapping(new MemoryRange(0n, range.len), f.backing, range.start, o.len % 3 !== 0);
      regions.push(handle);
      return "ok";
    }
    const index = o.i % Math.max(1, regions.length);
    const handle = regions[index];
    if (handle === undefined) return "none";
    if (o.k === "map") handle.map(o.w ? RWX : RX);
    else if (o.k === "unmap") handle.unmap();
    else {
      handle[Symbol.dispose]();
      regions.splice(index, 1);
    }
    return "ok";
  } catch (error) {
    if (!(error instanceof RegionError)) throw error;
    return `${error.kind}: ${error.message}`;
  }
}

/**
 * Not failed: the looks at a backing (size, seals, access mode: the last
 * is cached per backing) that refuse before anything changes, made inside
 * the transaction by the operations themselves (tests/fault_injection_test.ts
 * fails them); so only the commit's system calls fail here.
 */
const QUERIES = [...NEVER_FAULTED, "fstat", "fcntl(F_GET_SEALS)", "fcntl(F_GETFL)"];

Deno.test("every system call of a transaction's commit fails once, undoing the transaction", async (t) => {
  const seed = testSeed("MEMBACKING_FAULT_SEED", "transaction fault");
  nameIoctls(KvmIoctl);
  const injector = new Injector(seed);
  const previous = setWarningHandler((w) => injector.warnings.push(w));
  const fresh = processState(false);
  try {
    const variants = [{ name: "recording partition", kvm: false }];
    if (!skipWithoutKvm()) variants.push({ name: "recording and KVM partitions", kvm: true });
    let run = 0;
    for (const variant of variants) {
      await t.step(variant.name, () => {
        using kvm = variant.kvm ? KvmPartition.create() : undefined;
        for (
          const [b, bodies] of fc.sample(
            fc.array(fc.array(txOp, { maxLength: 20 }), {
              minLength: 10,
              maxLength: 25,
            }),
            { numRuns: 40, seed: seed + run++ },
          ).entries()
        ) {
          const batched = newSide();
          const direct = newSide();
          try {
            if (kvm !== undefined) {
              batched.f.manager.addPartition(new PartitionMapper(kvm, batched.f.va, 0n, false));
            }
            const state = () => ({
              everything: everything(batched),
              slots: kvm === undefined ? [] : slotState(kvm),
              protections: vaProtections(batched.f.va.base, batched.f.va.size).map((p) =>
                `${new MemoryRange(p.start, p.end)} ${p.perms}`
              ),
            });
            for (const [i, body] of bodies.entries()) {
              const results = injector.attempt(
                () => {
                  const regions = [...batched.regions];
                  const results: string[] = [];
                  {
                    using _ = batched.f.manager.beginTransaction();
                    for (const o of body) results.push(runTxOp(batched.f, regions, o));
                  }
                  batched.regions.splice(0, batched.regions.length, ...regions);
                  return results;
                },
                state,
                () => {},
                `${variant.name}, scenario ${b}, transaction ${i}`,
                QUERIES,
              );
              const expected = body.map((o) => runTxOp(direct.f, direct.regions, o));
              assert.deepEqual(results, expected, JSON.stringify(body));
              assert.deepEqual(everything(batched), everything(direct), JSON.stringify(body));
              if (kvm !== undefined) checkSlotsCover(kvm, batched.f);
            }
          } finally {
            batched.f[Symbol.dispose]();
            direct.f[Symbol.dispose]();
          }
        }
        if (kvm !== undefined) assert.deepEqual(kvm.slots(), [], "slots left behind");
      });
    }
  } finally {
    setWarningHandler(previous);
  }
  assert.deepEqual(processState(false), fresh, "descriptors or mappings leaked");
  console.log(injector.summary(seed));
  assert.ok(injector.faults >= 1000, `only ${injector.faults} faults`);
});

Deno.test("a mapping change inside a transaction applies what is pending first, and a failure there takes the pending changes back", () => {
  using f = new RegionFixture(0x40000n);
  const dma = new RecordingDmaTarget();
  f.manager.addDmaTarget(dma, false);
  const a = f.manager.newRegion("a", r(0, 0x4000), 0, true);
  a.addMapping(new MemoryRange(0n, 0x2000n), f.backing, 0n, true);
  a.map(RWX);
  const b = f.manager.newRegion("b", r(0x8000, 0xa000), 0, true);
  b.addMapping(new MemoryRange(0n, 0x2000n), f.backing, 0x8000n, true);
  b.map(RWX);
  const before = everything({ f, dma, regions: [] });
  const tx = f.manager.beginTransaction();
  a.map(RX);
  b.unmap();
  const c = f.manager.newRegion("c", r(0x10000, 0x11000), 0, true);
  c.map(RWX);
  // Hiding b is the commit's first host change (mmap over it): it fails.
  arm("mmap", 1, Errno.ENOMEM);
  let error: unknown;
  try {
    a.addMapping(new MemoryRange(0x2000n, 0x4000n), f.backing, 0x2000n, true);
  } catch (e) {
    error = e;
  } finally {
    disarm();
  }
  assert.ok(error instanceof SyscallError);
  assert.deepEqual([error.syscall, error.code, error.message], [
    "mmap",
    "ENOMEM",
    "Cannot allocate memory",
  ]);
  // Everything since the transaction began is taken back; it stays open.
  assert.deepEqual(everything({ f, dma, regions: [] }), before);
  assert.equal(c.isRemoved, true);
  assert.deepEqual(a.mapParams, RWX);
  assert.deepEqual(b.mapParams, RWX);
  // The same changes again, and the mapping, then the commit.
  a.map(RX);
  b.unmap();
  a.addMapping(new MemoryRange(0x2000n, 0x4000n), f.backing, 0x2000n, true);
  assert.deepEqual(f.partitionMap(), ["0x0-0x4000 ro"]);
  b.map(RWX);
  assert.deepEqual(f.partitionMap(), ["0x0-0x4000 ro"], "b waits for the commit");
  tx[Symbol.dispose]();
  assert.deepEqual(f.partitionMap(), ["0x0-0x4000 ro", "0x8000-0xa000 rw"]);
  assert.deepEqual(f.va.entries().map((e) => `${e.range} ${e.writable}`), [
    "0x0-0x2000 false",
    "0x2000-0x4000 false",
    "0x8000-0xa000 true",
  ]);
});
