import assert from "node:assert/strict";
import { GuestMemoryBuilder } from "../builder.ts";
import { setWarningHandler } from "../diagnostics/warnings.ts";
import { Fcntl, Memfd, Mman } from "../ffi/_constants.ts";
import { HostMapping } from "../ffi/_host_mapping.ts";
import { OwnedFd } from "../ffi/_owned_fd.ts";
import { SyscallError } from "../ffi/syscall_error.ts";
import { MemoryLayout } from "../layout/memory_layout.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { GuestMemoryManager } from "../manager/guest_memory_manager.ts";
import { PartitionAttachError } from "../manager/partition_attach_error.ts";
import { PartitionAttachment } from "../manager/partition_attachment.ts";
import { SharedMemoryBacking } from "../manager/shared_memory_backing.ts";
import { Vtl } from "../manager/vtl.ts";
import type { Partition } from "../partition/partition.ts";
import { PartitionMapperError } from "../partition/_partition_mapper_error.ts";
import { RecordingPartition } from "../testing/recording_partition.ts";
import { RamVisibility } from "../regions/ram_visibility_control.ts";
import { RegionError } from "../regions/region_error.ts";
import { vaProtections } from "./support/proc_maps.ts";
import { openFdCount } from "./support/requirements.ts";
import { managerInternals } from "../manager/guest_memory_manager.ts";
import { duplicateBacking } from "../manager/shared_memory_backing.ts";

const MiB = 1n << 20n;
const GiB = 1n << 30n;

/** 4 MiB of RAM, a 4 MiB MMIO gap, 4 MiB more RAM. */
const LAYOUT = MemoryLayout.fromGaps(8n * MiB, [new MemoryRange(4n * MiB, 8n * MiB)]);

/** `[gpa, size]` pairs of a partition's current map, as hex strings. */
function mapped(partition: RecordingPartition): string[] {
  return partition.mappings().map((m) => `${new MemoryRange(m.gpa, m.gpa + m.size)}`);
}

/** A partition that tracks its map and fails where told. */
class FaultyPartition implements Partition {
  readonly live = new Map<bigint, bigint>();
  constructor(
    readonly failMap: (gpa: bigint) => boolean,
    readonly failPin: (gpa: bigint) => boolean = () => false,
  ) {}
  mapRange(_host: bigint, size: bigint, gpa: bigint): void {
    if (this.failMap(gpa)) throw new Error(`no slot for 0x${gpa.toString(16)}`);
    this.live.set(gpa, size);
  }
  unmapRange(gpa: bigint, size: bigint): void {
    for (const start of [...this.live.keys()]) {
      if (start >= gpa && start < gpa + size) this.live.delete(start);
    }
  }
  pinRange(gpa: bigint): void {
    if (this.failPin(gpa)) throw new Error("pin refused");
  }
}

function attachError(fn: () => unknown): PartitionAttachError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof PartitionAttachError, `expected PartitionAttachError, got ${error}`);
    return error;
  }
  assert.fail("attach did not fail");
}

Deno.test("shared memory backing", async (t) => {
  await t.step("a second manager on the first one's backing sees the same bytes", () => {
    using first = new GuestMemoryBuilder().build(LAYOUT);
    using backing = first.sharedMemoryBacking()!;
    assert.ok(backing instanceof SharedMemoryBacking);
    assert.equal(backing.hugepageSize, undefined);
    // Write straight through the first manager's host mappings.
    const [low, high] = managerInternals(first).va.entries();
    low.bytes.set([1, 2, 3, 4], 0x1000);
    high.view.setUint32(0x10, 0xcafef00d, true);

    using second = new GuestMemoryBuilder().existingBacking(backing).build(LAYOUT);
    assert.notEqual(managerInternals(second).va.base, managerInternals(first).va.base);
    const memory = second.client().guestMemory();
    assert.deepEqual([...memory.readBytes(0x1000n, 4)], [1, 2, 3, 4]);
    assert.equal(memory.readU32(8n * MiB + 0x10n), 0xcafef00d);
    // And back the other way.
    memory.writeU8(0x2000n, 0x5a);
    assert.equal(low.bytes[0x2000], 0x5a);
  });

  await t.step("the backing outlives the manager that produced it", () => {
    let backing: SharedMemoryBacking;
    {
      using first = new GuestMemoryBuilder().build(LAYOUT);
      first.client().guestMemory().writeU64(0x3000n, 0x0123456789abcdefn);
      backing = first.sharedMemoryBacking()!;
    }
    using kept = backing;
    using second = new GuestMemoryBuilder().existingBacking(kept).build(LAYOUT);
    assert.equal(second.client().guestMemory().readU64(0x3000n), 0x0123456789abcdefn);
  });

  await t.step(
    "the builder takes its own descriptor: the caller may dispose of its backing",
    () => {
      using first = new GuestMemoryBuilder().build(LAYOUT);
      first.client().guestMemory().writeU8(0x5000n, 99);
      const backing = first.sharedMemoryBacking()!;
      using second = new GuestMemoryBuilder().existingBacking(backing).build(LAYOUT);
      backing[Symbol.dispose]();
      assert.equal(backing.isOpen, false);
      assert.equal(second.client().guestMemory().readU8(0x5000n), 99);
    },
  );

  await t.step("the RAM memfd is sealed against shrinking, growing and new seals", () => {
    using manager = new GuestMemoryBuilder().build(LAYOUT);
    using backing = manager.sharedMemoryBacking()!;
    using fd = duplicateBacking(backing);
    const eperm = (e: unknown) => e instanceof SyscallError && e.code === "EPERM";
    assert.throws(() => fd.truncate(0n), eperm);
    assert.throws(() => fd.truncate(4n * MiB), eperm);
    assert.throws(() => fd.truncate(16n * MiB), eperm);
    assert.throws(() => fd.allocate(0, 0n, 16n * MiB), eperm);
    assert.throws(() => fd.addSeals(Fcntl.F_SEAL_WRITE), eperm);
    assert.equal(fd.size(), 8n * MiB);
    // The guest still has its memory.
    manager.client().guestMemory().writeU32(8n * MiB + 4n * MiB - 4n, 7);
  });

  await t.step("fromMappable duplicates the caller's descriptor", () => {
    using manager = new GuestMemoryBuilder().build(LAYOUT);
    using original = manager.sharedMemoryBacking()!;
    const fds = openFdCount();
    const copy = SharedMemoryBacking.fromMappable(original);
    assert.notEqual(copy.fd, original.fd);
    assert.equal(openFdCount(), fds + 1);
    copy[Symbol.dispose]();
    copy[Symbol.dispose]();
    assert.equal(openFdCount(), fds);
    assert.equal(original.isOpen, true);
  });

  await t.step("any memfd of at least the RAM size can be a backing", () => {
    using file = OwnedFd.memfd("outside-ram", Memfd.MFD_CLOEXEC);
    file.truncate(16n * MiB);
    {
      using view = HostMapping.shared(file.fd, 0n, 0x1000n, Mman.PROT_READ | Mman.PROT_WRITE);
      view.bytes().set([9, 8, 7], 0x100);
    }
    using backing = SharedMemoryBacking.fromMappable(file);
    using manager = new GuestMemoryBuilder().existingBacking(backing).build(LAYOUT);
    assert.deepEqual([...manager.client().guestMemory().readBytes(0x100n, 3)], [9, 8, 7]);
  });

  await t.step("private memory mode has no shared backing", () => {
    using manager = new GuestMemoryBuilder().privateMemory(true).build(LAYOUT);
    assert.equal(manager.sharedMemoryBacking(), undefined);
  });
});

Deno.test("manager accessors", async (t) => {
  await t.step("client() and its guest memory are the same objects every time", () => {
    using manager = new GuestMemoryBuilder().build(LAYOUT);
    const client = manager.client();
    assert.equal(manager.client(), client);
    assert.equal(client.guestMemory(), manager.client().guestMemory());
  });

  await t.step("inspect() is a plain JSON tree of regions and VA mappings", () => {
    using manager = new GuestMemoryBuilder().vtl0AliasMap(GiB).pinMappings(true).build(LAYOUT);
    const tree = manager.inspect();
    assert.deepEqual(JSON.parse(JSON.stringify(tree)), tree);
    assert.deepEqual(tree, {
      regions: {
        "0x0-0x400000:ram": {
          map_params: { writable: true, executable: true, prefetch: false },
          is_active: true,
          priority: 255,
          mappings: { "0x0-0x400000": { writable: true, file_offset: "0x0" } },
        },
        "0x800000-0xc00000:ram": {
          map_params: { writable: true, executable: true, prefetch: false },
          is_active: true,
          priority: 255,
          mappings: { "0x800000-0xc00000": { writable: true, file_offset: "0x400000" } },
        },
      },
      va_mappings: {
        "0x0-0x400000": { kind: "shared", writable: true, file_offset: "0x0" },
        "0x800000-0xc00000": { kind: "shared", writable: true, file_offset: "0x400000" },
      },
      pin_mappings: true,
      vtl0_alias_map_offset: "0x40000000",
    });
  });

  await t.step("inspect() follows visibility changes; private entries have no file offset", () => {
    using manager = new GuestMemoryBuilder().privateMemory(true).build(LAYOUT);
    assert.deepEqual(manager.inspect().va_mappings, {
      "0x0-0x400000": { kind: "private", writable: true },
      "0x800000-0xc00000": { kind: "private", writable: true },
    });
    using shared = new GuestMemoryBuilder().x86LegacySupport(true).build(LAYOUT);
    shared.ramVisibilityControl().setRamVisibility(
      new MemoryRange(0xa0000n, 0xc0000n),
      RamVisibility.ReadOnly,
    );
    const va = shared.inspect().va_mappings as Record<string, { writable: boolean }>;
    assert.equal(va["0xa0000-0xc0000"].writable, false);
    assert.equal(va["0xc0000-0xc4000"].writable, true);
  });

  await t.step("ramVisibilityControl() controls exactly the RAM regions", () => {
    using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(LAYOUT);
    const partition = new RecordingPartition();
    using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
    const control = manager.ramVisibilityControl();
    control.setRamVisibility(new MemoryRange(0xa0000n, 0xc0000n), RamVisibility.Unmapped);
    assert.equal(partition.mappingAt(0xa0000n), undefined);
    assert.throws(
      () => control.setRamVisibility(new MemoryRange(0xa0000n, 0xb0000n), RamVisibility.Unmapped),
      { message: "0xa0000-0xb0000 is not a controllable RAM range" },
    );
    control.setRamVisibility(new MemoryRange(0xa0000n, 0xc0000n), RamVisibility.ReadWrite);
    assert.equal(partition.mappingAt(0xa0000n)?.writable, true);
  });

  await t.step("deviceMemoryMapper() and dmaMapperClient() work on the manager's regions", () => {
    using manager = new GuestMemoryBuilder().build(LAYOUT);
    const before = managerInternals(manager).regionManager.regionCount;
    const device = manager.deviceMemoryMapper().newRegion(0x10000n, "vram");
    assert.ok(device !== undefined);
    const seen: string[] = [];
    using _target = manager.dmaMapperClient().addDmaTarget({
      mapDma: (range) => void seen.push(`${range}`),
      unmapDma: () => {},
    }, false);
    assert.deepEqual(seen, ["0x0-0x400000", "0x800000-0xc00000"]);
    assert.equal(managerInternals(manager).regionManager.regionCount, before);
  });
});

Deno.test("attachPartition", async (t) => {
  await t.step("maps every active RAM region, one call per region", () => {
    using manager = new GuestMemoryBuilder().build(LAYOUT);
    const partition = new RecordingPartition();
    using attachment = manager.attachPartition(Vtl.Vtl0, partition);
    assert.ok(attachment instanceof PartitionAttachment);
    assert.equal(attachment.vtl, Vtl.Vtl0);
    assert.equal(attachment.partition, partition);
    assert.deepEqual(mapped(partition), ["0x0-0x400000", "0x800000-0xc00000"]);
    const [low, high] = partition.mappings();
    assert.equal(low.hostAddress, managerInternals(manager).va.base);
    assert.equal(high.hostAddress, managerInternals(manager).va.base + 8n * MiB);
    assert.equal(low.writable && low.executable, true);
    assert.deepEqual(partition.events.map((e) => e.kind), ["map", "map"]);
  });

  await t.step("VTL2 with an alias map: the shifted copy first, then the normal one", () => {
    using manager = new GuestMemoryBuilder().vtl0AliasMap(GiB).build(LAYOUT);
    const vtl2 = new RecordingPartition();
    using _a = manager.attachPartition(Vtl.Vtl2, vtl2);
    assert.deepEqual(
      vtl2.events.map((e) => `${e.kind} 0x${e.gpa.toString(16)}`),
      ["map 0x40000000", "map 0x40800000", "map 0x0", "map 0x800000"],
    );
    // Both copies point at the same host memory.
    assert.equal(vtl2.mappingAt(GiB)?.hostAddress, vtl2.mappingAt(0n)?.hostAddress);
    // VTL0 and VTL1 get no alias.
    for (const vtl of [Vtl.Vtl0, Vtl.Vtl1]) {
      const other = new RecordingPartition();
      using _b = manager.attachPartition(vtl, other);
      assert.deepEqual(mapped(other), ["0x0-0x400000", "0x800000-0xc00000"]);
    }
  });

  await t.step("pinMappings pins each range; prefetchRam prefetches it", () => {
    using manager = new GuestMemoryBuilder().pinMappings(true).prefetchRam(true).build(LAYOUT);
    const partition = new RecordingPartition();
    using _a = manager.attachPartition(Vtl.Vtl0, partition);
    assert.deepEqual(
      partition.events.map((e) => `${e.kind} 0x${e.gpa.toString(16)}`),
      ["map 0x0", "pin 0x0", "prefetch 0x0", "map 0x800000", "pin 0x800000", "prefetch 0x800000"],
    );
  });

  await t.step(
    "a pin failure: failed to attach ..., cause failed to pin ..., nothing mapped",
    () => {
      using manager = new GuestMemoryBuilder().pinMappings(true).build(LAYOUT);
      const partition = new FaultyPartition(() => false, (gpa) => gpa === 8n * MiB);
      const error = attachError(() => manager.attachPartition(Vtl.Vtl0, partition));
      assert.equal(error.message, "failed to attach partition to memory manager");
      assert.equal(error.kind, "partitionMapper");
      assert.ok(error.cause instanceof PartitionMapperError);
      assert.equal(error.cause.message, "failed to pin range to partition");
      assert.equal(error.cause.kind, "pin");
      assert.equal((error.cause.cause as Error).message, "pin refused");
      assert.equal(partition.live.size, 0);
      // Later changes do not reach it either.
      manager.deviceMemoryMapper().newRegion(0x10000n, "late").control.mapToGuest(0x400000n, true);
      assert.equal(partition.live.size, 0);
    },
  );

  await t.step("a map failure: cause failed to map range to partition, nothing mapped", () => {
    using manager = new GuestMemoryBuilder().build(LAYOUT);
    const partition = new FaultyPartition((gpa) => gpa === 8n * MiB);
    const error = attachError(() => manager.attachPartition(Vtl.Vtl0, partition));
    assert.equal(error.message, "failed to attach partition to memory manager");
    assert.equal((error.cause as PartitionMapperError).message, "failed to map range to partition");
    assert.equal(partition.live.size, 0);
  });

  await t.step("the alias attaches but the normal mapping fails: the alias is undone", () => {
    using manager = new GuestMemoryBuilder().vtl0AliasMap(GiB).build(LAYOUT);
    const partition = new FaultyPartition((gpa) => gpa === 8n * MiB);
    const error = attachError(() => manager.attachPartition(Vtl.Vtl2, partition));
    assert.equal((error.cause as PartitionMapperError).kind, "map");
    assert.equal(partition.live.size, 0);
    // The alias failing: nothing mapped either.
    const aliasFails = new FaultyPartition((gpa) => gpa >= GiB + 8n * MiB);
    attachError(() => manager.attachPartition(Vtl.Vtl2, aliasFails));
    assert.equal(aliasFails.live.size, 0);
  });

  await t.step("a failed attach leaves other partitions alone", () => {
    using manager = new GuestMemoryBuilder().build(LAYOUT);
    const good = new RecordingPartition();
    using _a = manager.attachPartition(Vtl.Vtl0, good);
    attachError(() => manager.attachPartition(Vtl.Vtl0, new FaultyPartition(() => true)));
    assert.deepEqual(mapped(good), ["0x0-0x400000", "0x800000-0xc00000"]);
  });

  await t.step("disposing of the attachment detaches the partition (alias included)", () => {
    using manager = new GuestMemoryBuilder().vtl0AliasMap(GiB).x86LegacySupport(true).build(
      LAYOUT,
    );
    const partition = new RecordingPartition();
    const attachment = manager.attachPartition(Vtl.Vtl2, partition);
    assert.equal(partition.mappings().length, 2 * 17);
    attachment[Symbol.dispose]();
    assert.equal(attachment.isAttached, false);
    assert.deepEqual(mapped(partition), []);
    // No longer updated.
    const events = partition.events.length;
    manager.ramVisibilityControl().setRamVisibility(
      new MemoryRange(0xa0000n, 0xc0000n),
      RamVisibility.ReadOnly,
    );
    assert.equal(partition.events.length, events);
    attachment.detach();
    assert.equal(partition.events.length, events);
  });
});

Deno.test("disposal", async (t) => {
  await t.step("unmaps everything from partitions, releases reservation and fd", () => {
    const fds = openFdCount();
    const partition = new RecordingPartition();
    const vtl2 = new RecordingPartition();
    const manager = new GuestMemoryBuilder().vtl0AliasMap(GiB).build(LAYOUT);
    const attachment = manager.attachPartition(Vtl.Vtl0, partition);
    manager.attachPartition(Vtl.Vtl2, vtl2);
    assert.equal(vtl2.mappings().length, 4);
    const { base, size } = managerInternals(manager).va;
    assert.notDeepEqual(vaProtections(base, size), []);
    manager[Symbol.dispose]();
    assert.equal(manager.isDisposed, true);
    assert.deepEqual(mapped(partition), []);
    assert.deepEqual(mapped(vtl2), []);
    assert.equal(managerInternals(manager).va.isReserved, false);
    assert.equal(attachment.isAttached, false);
    assert.equal(openFdCount(), fds);
    assert.deepEqual(vaProtections(base, size), []);
    // Harmless afterwards.
    manager[Symbol.dispose]();
    attachment[Symbol.dispose]();
    assert.throws(() => manager.client(), { message: "guest memory manager has been disposed" });
    assert.throws(() => manager.attachPartition(Vtl.Vtl0, new RecordingPartition()), {
      message: "guest memory manager has been disposed",
    });
  });

  await t.step("a partition whose unmap throws does not stop disposal", () => {
    const warnings: string[] = [];
    const previous = setWarningHandler((w) => warnings.push(w.message));
    try {
      const fds = openFdCount();
      const manager = new GuestMemoryBuilder().build(LAYOUT);
      manager.attachPartition(Vtl.Vtl0, {
        mapRange() {},
        unmapRange() {
          throw new Error("stuck");
        },
      });
      manager[Symbol.dispose]();
      assert.equal(managerInternals(manager).va.isReserved, false);
      assert.equal(openFdCount(), fds);
      assert.ok(warnings.length > 0);
      assert.ok(warnings.every((w) => w.startsWith("failed to unmap 0x")), warnings.join("; "));
    } finally {
      setWarningHandler(previous);
    }
  });

  await t.step("GuestMemoryManager is what build returns", () => {
    using manager = new GuestMemoryBuilder().build(LAYOUT);
    assert.ok(manager instanceof GuestMemoryManager);
  });
});

Deno.test("a detach the partition refuses leaves it attached, with every slot", () => {
  // Found by the fault-injection test: a failed unmap was only a warning,
  // and the partition kept slots over memory the manager had moved on from.
  using manager = new GuestMemoryBuilder().vtl0AliasMap(1n << 30n).build(
    MemoryLayout.fromGaps(4n << 20n, []),
  );
  const recording = new RecordingPartition();
  let refuse = 0;
  const partition: Partition = {
    mapRange: (host, size, gpa, w, x) => recording.mapRange(host, size, gpa, w, x),
    unmapRange: (gpa, size) => {
      if (gpa >= 1n << 30n && refuse > 0) {
        refuse--;
        throw new Error("busy");
      }
      recording.unmapRange(gpa, size);
    },
  };
  const attachment = manager.attachPartition(Vtl.Vtl2, partition);
  const slots = () => recording.mappings().map((m) => `${MemoryRange.fromLength(m.gpa, m.size)}`);
  const before = slots();
  assert.deepEqual(before, ["0x0-0x400000", "0x40000000-0x40400000"]);
  refuse = 1;
  assert.throws(() => attachment.detach(), (e) => {
    assert.ok(e instanceof RegionError);
    assert.equal(e.kind, "partitionUnmap");
    assert.equal(e.message, "failed to unmap memory region ram at 0x0-0x400000 from a partition");
    assert.equal((e.cause as Error).message, "busy");
    return true;
  });
  // The direct mapper, detached before the alias failed, was attached again.
  assert.equal(attachment.isAttached, true);
  assert.deepEqual(slots(), before);
  attachment.detach();
  assert.equal(attachment.isAttached, false);
  assert.deepEqual(slots(), []);
});
