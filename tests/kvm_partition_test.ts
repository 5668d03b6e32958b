import assert from "node:assert/strict";
import { Errno } from "../ffi/_errno.ts";
import { arm, disarm, nameIoctls, startCounting } from "../ffi/_fault_injection.ts";
import { HostMapping } from "../ffi/_host_mapping.ts";
import { KvmIoctl } from "../kvm/kvm_constants.ts";
import { readTextFile } from "../ffi/_proc_files.ts";
import { SyscallError } from "../ffi/syscall_error.ts";
import { KvmPartition } from "../kvm/kvm_partition.ts";
import { KvmPartitionError } from "../kvm/kvm_partition_error.ts";
import { openFdCount, skipWithoutKvm } from "./support/requirements.ts";

const PAGE = 0x1000n;

function slotSummary(partition: KvmPartition): string[] {
  return partition.slots().map((s) =>
    `${s.slot}:0x${s.gpa.toString(16)}+0x${s.size.toString(16)}${s.readonly ? ":ro" : ""}`
  );
}

/** Resident bytes of the /proc/self/smaps entry starting at `address`. */
function residentBytes(address: bigint): bigint {
  const lines = readTextFile("/proc/self/smaps").split("\n");
  const start = lines.findIndex((l) => l.startsWith(`${address.toString(16)}-`));
  assert.notEqual(start, -1, `no smaps entry at 0x${address.toString(16)}`);
  for (const line of lines.slice(start + 1)) {
    const match = /^Rss:\s+(\d+) kB$/.exec(line);
    if (match) return BigInt(match[1]) * 1024n;
  }
  throw new Error("no Rss line");
}

/** VmLck of this process in bytes. */
function lockedBytes(): bigint {
  const match = /^VmLck:\s+(\d+) kB$/m.exec(readTextFile("/proc/self/status"));
  assert.ok(match);
  return BigInt(match[1]) * 1024n;
}

function assertKvmError(fn: () => unknown, kind: string, message: string): KvmPartitionError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof KvmPartitionError, `expected KvmPartitionError, got ${caught}`);
  assert.equal(caught.kind, kind);
  assert.equal(caught.message, message);
  return caught;
}

nameIoctls(KvmIoctl);

Deno.test({
  name: "KvmPartition: memory slots",
  ignore: skipWithoutKvm(),
  fn: async (t) => {
    const fdsBefore = openFdCount();
    using host = HostMapping.anonymous(64n * PAGE, true);
    const partition = KvmPartition.create();

    await t.step("uses KVM_CAP_NR_MEMSLOTS as the slot limit", () => {
      assert.ok(partition.maxSlots >= 32, `maxSlots ${partition.maxSlots}`);
      assert.deepEqual(partition.slots(), []);
    });

    await t.step("maps ranges as slots ordered by guest address", () => {
      partition.mapRange(host.address, 4n * PAGE, 0x100000n, true, true);
      partition.mapRange(host.address + 4n * PAGE, 2n * PAGE, 0x10000n, false, false);
      partition.mapRange(host.address + 8n * PAGE, PAGE, 0x200000n, true, false);
      assert.deepEqual(slotSummary(partition), [
        "1:0x10000+0x2000:ro",
        "0:0x100000+0x4000",
        "2:0x200000+0x1000",
      ]);
      const ro = partition.slots()[0];
      assert.equal(ro.hostAddress, host.address + 4n * PAGE);
      assert.equal(ro.readonly, true);
      assert.equal(ro.pinned, false);
      assert.equal(partition.slotAt(0x11fffn)?.slot, 1);
      assert.equal(partition.slotAt(0x12000n), undefined);
      assert.equal(partition.slotAt(0xfffffn), undefined);
      assert.equal(partition.slotAt(0x100000n)?.slot, 0);
    });

    await t.step("reuses the lowest freed slot number", () => {
      partition.unmapRange(0x200000n, PAGE);
      partition.unmapRange(0x10000n, 2n * PAGE);
      partition.mapRange(host.address + 10n * PAGE, PAGE, 0x300000n, true, true);
      partition.mapRange(host.address + 11n * PAGE, PAGE, 0x301000n, true, true);
      partition.mapRange(host.address + 12n * PAGE, PAGE, 0x302000n, true, true);
      assert.deepEqual(slotSummary(partition), [
        "0:0x100000+0x4000",
        "1:0x300000+0x1000",
        "2:0x301000+0x1000",
        "3:0x302000+0x1000",
      ]);
    });

    await t.step("unmapRange deletes every slot inside the range", () => {
      partition.unmapRange(0x200000n, 0x200000n);
      assert.deepEqual(slotSummary(partition), ["0:0x100000+0x4000"]);
      partition.unmapRange(0x0n, 0x1000n); // nothing there: no-op
      assert.deepEqual(slotSummary(partition), ["0:0x100000+0x4000"]);
    });

    await t.step("a slot only partly inside the range is an error and nothing changes", () => {
      partition.mapRange(host.address + 20n * PAGE, PAGE, 0x400000n, true, true);
      assertKvmError(
        () => partition.unmapRange(0x101000n, 0x400000n),
        "partialUnmap",
        "cannot unmap 0x101000-0x501000: memory slot 0 at 0x100000-0x104000 is only partly inside",
      );
      assertKvmError(
        () => partition.unmapRange(0x0n, 0x102000n),
        "partialUnmap",
        "cannot unmap 0x0-0x102000: memory slot 0 at 0x100000-0x104000 is only partly inside",
      );
      assert.deepEqual(slotSummary(partition), ["0:0x100000+0x4000", "1:0x400000+0x1000"]);
    });

    await t.step("overlapping and malformed ranges are refused", () => {
      assertKvmError(
        () => partition.mapRange(host.address, 2n * PAGE, 0xff000n, true, true),
        "overlap",
        "range 0xff000-0x101000 overlaps memory slot 0 at 0x100000-0x104000",
      );
      assertKvmError(
        () => partition.mapRange(host.address, PAGE, 0x103000n, true, true),
        "overlap",
        "range 0x103000-0x104000 overlaps memory slot 0 at 0x100000-0x104000",
      );
      assertKvmError(
        () => partition.mapRange(host.address, 0n, 0x800000n, true, true),
        "invalidRange",
        "invalid memory slot 0x0 bytes at 0x800000 from host 0x" + host.address.toString(16),
      );
      assertKvmError(
        () => partition.mapRange(host.address + 1n, PAGE, 0x800000n, true, true),
        "invalidRange",
        `invalid memory slot 0x1000 bytes at 0x800000 from host 0x${
          (host.address + 1n).toString(16)
        }`,
      );
      assert.deepEqual(slotSummary(partition), ["0:0x100000+0x4000", "1:0x400000+0x1000"]);
    });

    await t.step("an ioctl failure is a map error with the SyscallError as cause", () => {
      // A kernel address cannot back a slot: KVM answers EINVAL.
      const err = assertKvmError(
        () => partition.mapRange(0xffff_8000_0000_0000n, PAGE, 0x800000n, true, true),
        "map",
        "failed to create memory slot 2 at 0x800000-0x801000",
      );
      assert.ok(err.cause instanceof SyscallError);
      assert.equal(err.cause.syscall, "ioctl(KVM_SET_USER_MEMORY_REGION)");
      assert.equal(err.cause.code, "EINVAL");
      // The number was not consumed.
      partition.mapRange(host.address + 30n * PAGE, PAGE, 0x800000n, true, true);
      assert.equal(partition.slotAt(0x800000n)?.slot, 2);
    });

    await t.step("prefetchRange populates the host pages", () => {
      using ram = HostMapping.anonymous(16n * PAGE, true);
      assert.equal(residentBytes(ram.address), 0n);
      partition.mapRange(ram.address, 16n * PAGE, 0x1000000n, true, true);
      partition.prefetchRange(0x1000000n, 16n * PAGE);
      assert.equal(residentBytes(ram.address), 16n * PAGE);
      partition.unmapRange(0x1000000n, 16n * PAGE);
    });

    await t.step("prefetch of unbacked host pages is a prefetch error", () => {
      using hole = HostMapping.reserve(4n * PAGE);
      partition.mapRange(hole.address, 4n * PAGE, 0x2000000n, true, true);
      const err = assertKvmError(
        () => partition.prefetchRange(0x2000000n, 4n * PAGE),
        "prefetch",
        `failed to prefetch 0x2000000-0x2004000 of memory slot ${
          partition.slotAt(0x2000000n)?.slot
        }`,
      );
      assert.ok(err.cause instanceof SyscallError);
      partition.unmapRange(0x2000000n, 4n * PAGE);
    });

    await t.step("pinRange mlocks the host pages until the slot is unmapped", () => {
      using ram = HostMapping.anonymous(8n * PAGE, true);
      const before = lockedBytes();
      partition.mapRange(ram.address, 8n * PAGE, 0x3000000n, true, true);
      partition.pinRange(0x3000000n, 8n * PAGE);
      assert.equal(lockedBytes() - before, 8n * PAGE);
      assert.equal(partition.slotAt(0x3000000n)?.pinned, true);
      partition.unmapRange(0x3000000n, 8n * PAGE);
      assert.equal(lockedBytes(), before);
    });

    await t.step("dispose deletes the slots and closes every fd", () => {
      partition.vcpu(); // a vCPU fd and its kvm_run mapping too
      partition[Symbol.dispose]();
      partition[Symbol.dispose](); // idempotent
      assert.equal(partition.isDisposed, true);
      assert.equal(openFdCount(), fdsBefore);
      assert.throws(
        () => partition.mapRange(host.address, PAGE, 0n, true, true),
        /kvm partition has been disposed/,
      );
    });
  },
});

Deno.test({
  name: "KvmPartition: slot limit",
  ignore: skipWithoutKvm(),
  fn: async (t) => {
    const fdsBefore = openFdCount();
    using host = HostMapping.reserve(8n * PAGE);

    await t.step("maxSlots caps the number of slots with a clear error", () => {
      using partition = KvmPartition.create({ maxSlots: 3 });
      assert.equal(partition.maxSlots, 3);
      for (let i = 0n; i < 3n; i++) {
        partition.mapRange(host.address + i * PAGE, PAGE, i * PAGE, true, true);
      }
      assertKvmError(
        () => partition.mapRange(host.address + 3n * PAGE, PAGE, 3n * PAGE, true, true),
        "slotsExhausted",
        "no free memory slot: all 3 slots are in use",
      );
      assert.equal(partition.slots().length, 3);
      partition.unmapRange(PAGE, PAGE);
      partition.mapRange(host.address + 3n * PAGE, PAGE, 3n * PAGE, true, true);
      assert.equal(partition.slotAt(3n * PAGE)?.slot, 1);
    });

    await t.step("maxSlots never exceeds what KVM allows", () => {
      using partition = KvmPartition.create({ maxSlots: 1_000_000 });
      using other = KvmPartition.create();
      assert.equal(partition.maxSlots, other.maxSlots);
    });

    await t.step("a bad maxSlots leaves no fd behind", () => {
      assert.throws(() => KvmPartition.create({ maxSlots: 0 }), RangeError);
      assert.equal(openFdCount(), fdsBefore);
    });

    await t.step("KVM's own limit: all KVM_CAP_NR_MEMSLOTS slots, then slots_exhausted", () => {
      using partition = KvmPartition.create();
      const max = BigInt(partition.maxSlots);
      using big = HostMapping.reserve(max * PAGE + PAGE);
      for (let i = 0n; i < max; i++) {
        partition.mapRange(big.address + i * PAGE, PAGE, i * PAGE, true, true);
      }
      assertKvmError(
        () => partition.mapRange(big.address + max * PAGE, PAGE, max * PAGE, true, true),
        "slotsExhausted",
        `no free memory slot: all ${max} slots are in use`,
      );
      partition.unmapRange(0n, max * PAGE);
      assert.deepEqual(partition.slots(), []);
    });

    assert.equal(openFdCount(), fdsBefore);
  },
});

Deno.test({
  name: "KvmPartition batches: merged slots, kept slots, splits, and an atomic commit",
  ignore: skipWithoutKvm(),
  fn: async (t) => {
    using host = HostMapping.anonymous(64n * PAGE, true);
    using partition = KvmPartition.create();
    const at = (page: bigint) => host.address + page * PAGE;
    /** Runs `fn`, returning the ioctls it made. */
    const ioctls = (fn: () => void): string[] => {
      startCounting();
      let trace: readonly string[] = [];
      try {
        fn();
      } finally {
        trace = disarm().trace;
      }
      return trace.filter((name) => name.startsWith("ioctl"));
    };
    // Four adjacent 2-page ranges at 0x10000 (host pages 0-7), one slot each.
    const ranges = [0n, 2n, 4n, 6n].map((p) => [at(p), 0x10000n + p * PAGE] as const);
    for (const [h, gpa] of ranges) partition.mapRange(h, 2n * PAGE, gpa, true, true);
    const flip = (writable: boolean) => {
      assert.equal(partition.beginBatch(), true);
      for (const [h, gpa] of ranges) {
        partition.unmapRange(gpa, 2n * PAGE);
        partition.mapRange(h, 2n * PAGE, gpa, writable, true);
      }
      partition.commitBatch();
    };

    await t.step("separate slots mapped again as they were stay separate", () => {
      const before = slotSummary(partition);
      assert.equal(before.length, 4);
      assert.deepEqual(ioctls(() => flip(true)), []);
      assert.deepEqual(slotSummary(partition), before);
    });

    await t.step("adjacent ranges changed in one batch share one slot", () => {
      assert.equal(slotSummary(partition).length, 4);
      const made = ioctls(() => flip(false));
      assert.equal(made.length, 5, made.join()); // 4 deletes, 1 create
      assert.deepEqual(slotSummary(partition), ["0:0x10000+0x8000:ro"]);
      assert.equal(ioctls(() => flip(true)).length, 2); // 1 delete, 1 create
      assert.deepEqual(slotSummary(partition), ["0:0x10000+0x8000"]);
    });

    await t.step("the last commit can be undone exactly, until its slots change", () => {
      const merged = slotSummary(partition);
      flip(false);
      assert.equal(partition.revertBatch(), true);
      assert.deepEqual(slotSummary(partition).map((s) => s.replace(/^\d+:/, "")), [
        "0x10000+0x8000",
      ]);
      assert.equal(partition.revertBatch(), false, "only once");
      flip(false);
      partition.unmapRange(0x10000n, 2n * PAGE); // splits the merged slot
      assert.equal(partition.revertBatch(), false);
      partition.mapRange(at(0n), 2n * PAGE, 0x10000n, false, true);
      flip(true);
      assert.deepEqual(slotSummary(partition).map((s) => s.replace(/^\d+:/, "")), [
        "0x10000+0x8000",
      ]);
      assert.equal(merged.length, 1);
    });

    await t.step("a range unmapped and mapped again as it was keeps its slot", () => {
      assert.deepEqual(ioctls(() => flip(true)), []);
      assert.equal(partition.beginBatch(), true);
      partition.unmapRange(0x10000n, 8n * PAGE);
      partition.abortBatch();
      assert.deepEqual(slotSummary(partition), ["0:0x10000+0x8000"]);
    });

    await t.step("checks inside a batch are the usual ones", () => {
      assert.equal(partition.beginBatch(), true);
      assert.equal(partition.beginBatch(), false, "one batch at a time");
      partition.unmapRange(0x12000n, 2n * PAGE);
      assertKvmError(
        () => partition.mapRange(at(20n), PAGE, 0x10000n, true, true),
        "overlap",
        "range 0x10000-0x11000 overlaps the range mapped in this batch at 0x10000-0x12000",
      );
      partition.mapRange(at(2n), 2n * PAGE, 0x12000n, true, true);
      assertKvmError(
        () => partition.unmapRange(0x12000n, PAGE),
        "partialUnmap",
        "cannot unmap 0x12000-0x13000: the range mapped in this batch at 0x12000-0x14000 is only partly inside",
      );
      // Mapped back as it was: the merged slot stays, no ioctl.
      assert.deepEqual(ioctls(() => partition.commitBatch()), []);
      assert.deepEqual(slotSummary(partition), ["0:0x10000+0x8000"]);
    });

    await t.step("unmapping one range of a merged slot re-creates the rest", () => {
      flip(false);
      assert.deepEqual(slotSummary(partition), ["0:0x10000+0x8000:ro"]);
      assertKvmError(
        () => partition.unmapRange(0x13000n, 2n * PAGE),
        "partialUnmap",
        "cannot unmap 0x13000-0x15000: memory slot 0 at 0x10000-0x18000 is only partly inside",
      );
      assert.equal(ioctls(() => partition.unmapRange(0x12000n, 2n * PAGE)).length, 3);
      assert.deepEqual(slotSummary(partition), ["0:0x10000+0x2000:ro", "1:0x14000+0x4000:ro"]);
      // Mapped back as it was (what a failed change does to undo itself):
      // the merged slot comes back.
      assert.equal(
        ioctls(() => partition.mapRange(at(2n), 2n * PAGE, 0x12000n, false, true)).length,
        3,
      );
      assert.deepEqual(slotSummary(partition), ["0:0x10000+0x8000:ro"]);
      // Mapped back otherwise: a slot of its own.
      partition.unmapRange(0x12000n, 2n * PAGE);
      partition.mapRange(at(2n), 2n * PAGE, 0x12000n, true, true);
      assert.deepEqual(slotSummary(partition), [
        "0:0x10000+0x2000:ro",
        "2:0x12000+0x2000",
        "1:0x14000+0x4000:ro",
      ]);
      partition.unmapRange(0x12000n, 2n * PAGE);
      partition.mapRange(at(2n), 2n * PAGE, 0x12000n, false, true);
    });

    await t.step("a failed commit leaves the slots as before the batch", () => {
      const before = slotSummary(partition);
      for (let nth = 1; nth <= 4; nth++) {
        assert.equal(partition.beginBatch(), true);
        for (const [h, gpa] of ranges) {
          partition.unmapRange(gpa, 2n * PAGE);
          partition.mapRange(h, 2n * PAGE, gpa, true, true);
        }
        arm("ioctl(KVM_SET_USER_MEMORY_REGION)", nth, Errno.ENOMEM);
        let error: unknown;
        try {
          partition.commitBatch();
        } catch (e) {
          error = e;
        }
        assert.ok(error instanceof KvmPartitionError);
        assert.equal(error.kind, nth <= 3 ? "unmap" : "map");
        assert.equal(
          error.message.replace(/slot \d+/, "slot N"),
          nth <= 3
            ? `failed to delete memory slot N at ${
              ["0x10000-0x12000", "0x12000-0x14000", "0x14000-0x18000"][nth - 1]
            }`
            : "failed to create memory slot N at 0x10000-0x18000",
        );
        disarm();
        assert.ok(error.cause instanceof SyscallError);
        assert.deepEqual(
          slotSummary(partition).map((s) => s.replace(/^\d+:/, "")),
          before.map((s) => s.replace(/^\d+:/, "")),
          `after failing ioctl ${nth}`,
        );
      }
      for (const [, gpa] of ranges) partition.unmapRange(gpa, 2n * PAGE);
      assert.deepEqual(partition.slots(), []);
    });
  },
});
