import assert from "node:assert/strict";
import { Mman } from "../ffi/_constants.ts";
import { HostMapping } from "../ffi/_host_mapping.ts";
import { mprotect } from "../ffi/_mman.ts";
import { OwnedFd } from "../ffi/_owned_fd.ts";
import { readTextFile } from "../ffi/_proc_files.ts";
import { GuestProbe } from "../testing/guest_probe.ts";
import { KvmPartition } from "../kvm/kvm_partition.ts";
import { openFdCount, skipWithoutKvm } from "./support/requirements.ts";

const PAGE = 0x1000n;
const RAM_GPA = 0x100000n;
const RAM_SIZE = 16n * PAGE;
const RO_GPA = 0x200000n;

function lockedBytes(): bigint {
  const match = /^VmLck:\s+(\d+) kB$/m.exec(readTextFile("/proc/self/status"));
  assert.ok(match);
  return BigInt(match[1]) * 1024n;
}

Deno.test({
  name: "GuestProbe: a real guest sees the partition's slots",
  ignore: skipWithoutKvm(),
  fn: async (t) => {
    const fdsBefore = openFdCount();
    using memfd = OwnedFd.memfd("probe-ram", 0);
    memfd.truncate(RAM_SIZE + 4n * PAGE);
    using ram = HostMapping.shared(memfd.fd, 0n, RAM_SIZE, Mman.PROT_READ | Mman.PROT_WRITE);
    using ro = HostMapping.shared(memfd.fd, RAM_SIZE, 4n * PAGE, Mman.PROT_READ | Mman.PROT_WRITE);
    const partition = KvmPartition.create();
    partition.mapRange(ram.address, RAM_SIZE, RAM_GPA, true, true);
    partition.mapRange(ro.address, 4n * PAGE, RO_GPA, false, true);
    const probe = GuestProbe.create(partition);
    const bytes = ram.bytes();

    await t.step("the code page is a read-only slot at 0xfffff000", () => {
      assert.equal(probe.codeGpa, 0xfffff000n);
      const slot = partition.slotAt(0xfffff000n);
      assert.equal(slot?.readonly, true);
      assert.equal(slot?.size, PAGE);
    });

    await t.step("guest loads see bytes the host wrote", () => {
      bytes.set([0x11, 0x22, 0x33, 0x44, 0x55], 0x2ffe);
      assert.deepEqual(probe.load(RAM_GPA + 0x2ffen, 4), { kind: "value", value: 0x44332211 });
      assert.deepEqual(probe.load(RAM_GPA + 0x2fffn, 2), { kind: "value", value: 0x3322 });
      assert.deepEqual(probe.load(RAM_GPA + 0x3002n, 1), { kind: "value", value: 0x55 });
      bytes.set([0xff, 0xff, 0xff, 0xfe], 0x100);
      assert.deepEqual(probe.load(RAM_GPA + 0x100n, 4), { kind: "value", value: 0xfeffffff });
    });

    await t.step("guest stores are seen by the host", () => {
      assert.deepEqual(probe.store(RAM_GPA + 0x400n, 4, 0xdeadbeef), { kind: "done" });
      assert.deepEqual([...bytes.subarray(0x400, 0x404)], [0xef, 0xbe, 0xad, 0xde]);
      assert.deepEqual(probe.store(RAM_GPA + 0x501n, 2, 0x1234), { kind: "done" });
      assert.deepEqual([...bytes.subarray(0x501, 0x503)], [0x34, 0x12]);
      assert.deepEqual(probe.store(RAM_GPA + RAM_SIZE - 1n, 1, 0x1a5), { kind: "done" });
      assert.equal(bytes[Number(RAM_SIZE) - 1], 0xa5);
      // Through the other mapping of the same file too.
      const again = HostMapping.shared(memfd.fd, 0n, PAGE, Mman.PROT_READ);
      try {
        assert.equal(again.bytes()[0x400], 0xef);
      } finally {
        again.unmap();
      }
    });

    await t.step("reads from a read-only slot succeed", () => {
      ro.bytes().set([1, 2, 3, 4], 0x10);
      assert.deepEqual(probe.load(RO_GPA + 0x10n, 4), { kind: "value", value: 0x04030201 });
    });

    await t.step("a store into a read-only slot is an MMIO exit and memory is unchanged", () => {
      assert.deepEqual(probe.store(RO_GPA + 0x10n, 2, 0xbeef), {
        kind: "mmio",
        gpa: RO_GPA + 0x10n,
        isWrite: true,
        size: 2,
        data: new Uint8Array([0xef, 0xbe]),
      });
      assert.deepEqual([...ro.bytes().subarray(0x10, 0x14)], [1, 2, 3, 4]);
      assert.deepEqual(probe.store(RO_GPA + 0x3ffcn, 4, 0x01020304), {
        kind: "mmio",
        gpa: RO_GPA + 0x3ffcn,
        isWrite: true,
        size: 4,
        data: new Uint8Array([4, 3, 2, 1]),
      });
      assert.deepEqual([...ro.bytes().subarray(0x3ffc, 0x4000)], [0, 0, 0, 0]);
    });

    await t.step("a load where no slot is is an MMIO exit", () => {
      for (const gpa of [0x0n, RAM_GPA + RAM_SIZE, 0xfee00000n, 0xffffeffcn]) {
        assert.deepEqual(probe.load(gpa, 4), {
          kind: "mmio",
          gpa,
          isWrite: false,
          size: 4,
          data: new Uint8Array(0),
        });
      }
      assert.deepEqual(probe.store(0x0n, 1, 7), {
        kind: "mmio",
        gpa: 0x0n,
        isWrite: true,
        size: 1,
        data: new Uint8Array([7]),
      });
      // The MMIO exits were completed: RAM still works.
      assert.deepEqual(probe.load(RAM_GPA + 0x400n, 4), { kind: "value", value: 0xdeadbeef });
    });

    await t.step("a slot whose host pages are PROT_NONE gives memory faults, not MMIO", () => {
      using hole = HostMapping.reserve(2n * PAGE);
      partition.mapRange(hole.address, 2n * PAGE, 0x300000n, true, true);
      for (const result of [probe.load(0x300010n, 4), probe.store(0x301ffcn, 4, 1)]) {
        assert.equal(result.kind, "memory_fault");
      }
      // A read-only slot over pages that later lose their protection.
      mprotect(ro.address + 3n * PAGE, PAGE, Mman.PROT_NONE);
      assert.equal(probe.load(RO_GPA + 0x3000n, 4).kind, "memory_fault");
      mprotect(ro.address + 3n * PAGE, PAGE, Mman.PROT_READ | Mman.PROT_WRITE);
      assert.deepEqual(probe.load(RO_GPA + 0x3000n, 4), { kind: "value", value: 0 });
      partition.unmapRange(0x300000n, 2n * PAGE);
      assert.equal(probe.load(0x300010n, 4).kind, "mmio");
    });

    await t.step("unmapping a slot turns its addresses into MMIO", () => {
      partition.unmapRange(RO_GPA, 4n * PAGE);
      assert.equal(probe.load(RO_GPA + 0x10n, 4).kind, "mmio");
      partition.mapRange(ro.address, 4n * PAGE, RO_GPA, true, true);
      assert.deepEqual(probe.store(RO_GPA + 0x10n, 2, 0xbeef), { kind: "done" });
      assert.deepEqual([...ro.bytes().subarray(0x10, 0x14)], [0xef, 0xbe, 3, 4]);
    });

    await t.step("prefetchRange and pinRange work on a slot the guest then uses", () => {
      const before = lockedBytes();
      partition.prefetchRange(RAM_GPA, RAM_SIZE);
      partition.pinRange(RAM_GPA, RAM_SIZE);
      assert.equal(lockedBytes() - before, RAM_SIZE);
      assert.deepEqual(probe.load(RAM_GPA + 0x400n, 4), { kind: "value", value: 0xdeadbeef });
      partition.unmapRange(RAM_GPA, RAM_SIZE);
      assert.equal(lockedBytes(), before);
    });

    await t.step("addresses at or beyond 4 GiB and bad sizes are refused", () => {
      assert.throws(() => probe.load(1n << 32n, 1), RangeError);
      assert.throws(() => probe.load(0xfffffffen, 4), RangeError);
      assert.throws(() => probe.store(0n, 8 as 4, 0), RangeError);
      assert.throws(() => GuestProbe.create(partition, { codeGpa: 0x1234n }), RangeError);
    });

    await t.step("dispose removes the code slot and closes every fd", () => {
      probe[Symbol.dispose]();
      assert.equal(partition.slotAt(0xfffff000n), undefined);
      assert.throws(() => probe.load(0n, 1), /guest probe has been disposed/);
      partition[Symbol.dispose]();
      assert.equal(openFdCount(), fdsBefore + 1); // the memfd, closed when the test ends
    });
  },
});

Deno.test({
  name: "GuestProbe: a probe at another code address, two probes on one VM",
  ignore: skipWithoutKvm(),
  fn: () => {
    using partition = KvmPartition.create();
    using ram = HostMapping.anonymous(PAGE, true);
    partition.mapRange(ram.address, PAGE, 0n, true, true);
    {
      using probe = GuestProbe.create(partition, { codeGpa: 0x8000n });
      assert.deepEqual(probe.store(0x10n, 4, 42), { kind: "done" });
      assert.deepEqual(probe.load(0x8000n, 1), { kind: "value", value: 0x0f }); // its own code
    }
    using second = GuestProbe.create(partition);
    assert.deepEqual(second.load(0x10n, 4), { kind: "value", value: 42 });
    assert.equal(ram.bytes()[0x10], 42);
  },
});
