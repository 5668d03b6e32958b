import assert from "node:assert/strict";
import { HostMapping } from "../ffi/_host_mapping.ts";
import type { KvmVm } from "../kvm/kvm_vm.ts";
import { KvmPartition } from "../kvm/kvm_partition.ts";
import { KvmPartitionError } from "../kvm/kvm_partition_error.ts";
import { openFdCount, skipWithoutKvm } from "./support/requirements.ts";
import { mulberry32Below } from "./support/seeded_random.ts";

const PAGE = 0x1000n;
const WINDOW_PAGES = 2048;
const OPERATIONS = 1000;
const MAX_SLOTS = 12;

interface ModelSlot {
  slot: number;
  gpa: bigint;
  size: bigint;
  readonly: boolean;
}

function lowestFree(model: ModelSlot[]): number {
  const used = new Set(model.map((s) => s.slot));
  let n = 0;
  while (used.has(n)) n++;
  return n;
}

/** Proves KVM itself has no slot in the window: one slot over all of it must succeed. */
function assertWindowEmptyInKvm(vm: KvmVm, host: HostMapping): void {
  vm.setUserMemoryRegion({
    slot: 0,
    flags: 0,
    guestPhysAddr: 0n,
    memorySize: BigInt(WINDOW_PAGES) * PAGE,
    userspaceAddr: host.address,
  });
  vm.setUserMemoryRegion({
    slot: 0,
    flags: 0,
    guestPhysAddr: 0n,
    memorySize: 0n,
    userspaceAddr: 0n,
  });
}

Deno.test({
  name: "KvmPartition: 1,000 random map/unmap operations leave no slot and no fd",
  ignore: skipWithoutKvm(),
  fn: () => {
    const seed = Number(Deno.env.get("MEMBACKING_SEED") ?? Date.now() % 2 ** 31);
    const next = mulberry32Below(seed);
    const fdsBefore = openFdCount();
    const host = HostMapping.reserve(BigInt(WINDOW_PAGES) * PAGE);
    const partition = KvmPartition.create({ maxSlots: MAX_SLOTS });
    const witness = partition.unsafeVm.tryClone(); // keeps the VM alive after dispose
    const model: ModelSlot[] = [];
    let maps = 0;
    let unmaps = 0;
    const refused = { overlap: 0, slots_exhausted: 0, partial_unmap: 0 };
    try {
      for (let op = 0; op < OPERATIONS; op++) {
        let start = BigInt(next(WINDOW_PAGES - 16)) * PAGE;
        let size = BigInt(1 + next(16)) * PAGE;
        const target = model[next(model.length + 1)];
        if (next(2) === 0 && target !== undefined) {
          // Aim at an existing slot, sometimes spilling into its neighbours.
          start = target.gpa - (next(4) === 0 ? BigInt(next(3)) * PAGE : 0n);
          // Spilling below a slot at 0 would aim at a negative address (an
          // invalid range, not an overlap): stay inside the window.
          if (start < 0n) start = 0n;
          size = target.gpa + target.size - start + (next(4) === 0 ? BigInt(next(8)) * PAGE : 0n);
        }
        const end = start + size;
        const context = `seed ${seed}, operation ${op}`;
        if (next(2) === 0) {
          const readonly = next(2) === 0;
          const clash = model.find((s) => s.gpa < end && start < s.gpa + s.size);
          const full = model.length >= partition.maxSlots;
          let error: unknown;
          try {
            partition.mapRange(host.address + start, size, start, !readonly, true);
          } catch (err) {
            error = err;
          }
          if (clash !== undefined) {
            assert.ok(error instanceof KvmPartitionError, context);
            assert.equal(error.kind, "overlap", context);
            refused.overlap++;
          } else if (full) {
            assert.ok(error instanceof KvmPartitionError, context);
            assert.equal(error.kind, "slotsExhausted", context);
            refused.slots_exhausted++;
          } else {
            assert.equal(error, undefined, context);
            model.push({ slot: lowestFree(model), gpa: start, size, readonly });
            maps++;
          }
        } else {
          const inside = model.filter((s) => s.gpa < end && start < s.gpa + s.size);
          const partial = inside.some((s) => s.gpa < start || s.gpa + s.size > end);
          let error: unknown;
          try {
            partition.unmapRange(start, size);
          } catch (err) {
            error = err;
          }
          if (partial) {
            assert.ok(error instanceof KvmPartitionError, context);
            assert.equal(error.kind, "partialUnmap", context);
            refused.partial_unmap++;
          } else {
            assert.equal(error, undefined, context);
            for (const s of inside) model.splice(model.indexOf(s), 1);
            unmaps += inside.length;
          }
        }
        model.sort((a, b) => (a.gpa < b.gpa ? -1 : 1));
        assert.deepEqual(
          partition.slots().map(({ slot, gpa, size, readonly }) => ({ slot, gpa, size, readonly })),
          model,
          context,
        );
      }
      const summary = `seed ${seed}: ${maps} slots created, ${unmaps} deleted, refused ${
        JSON.stringify(refused)
      }`;
      console.log(summary);
      assert.ok(maps > 150 && unmaps > 100, summary);
      assert.ok(Object.values(refused).every((n) => n > 0), summary);
      partition[Symbol.dispose]();
      // After dispose the VM (still open through the witness) has no slot left.
      assertWindowEmptyInKvm(witness, host);
      for (let slot = 0; slot < MAX_SLOTS; slot++) {
        witness.setUserMemoryRegion({
          slot: slot,
          flags: 0,
          guestPhysAddr: BigInt(slot) * PAGE,
          memorySize: PAGE,
          userspaceAddr: host.address,
        });
      }
    } finally {
      partition[Symbol.dispose]();
      witness[Symbol.dispose]();
      host.unmap();
    }
    assert.equal(openFdCount(), fdsBefore);

    // And a new partition starts again from slot 0.
    using fresh = KvmPartition.create();
    using page = HostMapping.anonymous(PAGE, true);
    fresh.mapRange(page.address, PAGE, 0n, true, true);
    assert.equal(fresh.slots()[0].slot, 0);
  },
});
