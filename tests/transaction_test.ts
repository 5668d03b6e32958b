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
import type { RegionHandle } from "../regions/_region_handle.ts";
import { r, RecordingDmaTarget, RegionFixture, RWX, RX } from "./support/region_fixture.ts";

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
  fc.record({ k: fc.constant("begin" as const) }),
  fc.record({ k: fc.constant("end" as const) }),
);

Deno.test("transactions apply the net result of the changes made in them", () => {
  const seedText = Deno.env.get("MEMBACKING_TX_SEED");
  const seed = seedText === undefined ? (Math.random() * 2 ** 31) | 0 : Number(seedText);
  console.log(`transaction seed: ${seed} (replay with MEMBACKING_TX_SEED=${seed})`);
  let operations = 0;
  let batchedChanges = 0;
  fc.assert(
    fc.property(fc.array(op, { minLength: 30, maxLength: 120 }), (ops) => {
      const make = (): Side => {
        const f = new RegionFixture(BigInt(SIZE));
        const dma = new RecordingDmaTarget();
        f.manager.addDmaTarget(dma, false);
        return { f, dma, regions: [] };
      };
      const direct = make();
      const batched = make();
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
                  handle.addMapping(
                    new MemoryRange(0n, range.len),
                    side.f.backing,
                    range.start,
                    true,
                  );
                  side.regions.push(handle);
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
