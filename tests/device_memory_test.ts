import assert from "node:assert/strict";
import { GuestMemoryBuilder } from "../builder.ts";
import { Fcntl, Memfd } from "../ffi/_constants.ts";
import { OwnedFd } from "../ffi/_owned_fd.ts";
import { SyscallError } from "../ffi/syscall_error.ts";
import { MemoryLayout } from "../layout/memory_layout.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { Vtl } from "../manager/vtl.ts";
import { RegionError } from "../regions/region_error.ts";
import { RecordingPartition } from "../testing/recording_partition.ts";
import {
  r,
  RecordingDmaTarget,
  RegionFixture,
  RWX,
  RX,
  shrinkSealedMemfd,
} from "./support/region_fixture.ts";
import { newDeviceMemoryMapper } from "../device_memory/device_memory_mapper.ts";

const describe = (f: RegionFixture) =>
  f.manager.regionInfos().map((i) =>
    `${i.name} ${i.range} p${i.priority} ${i.active ? "active" : "inactive"} [${
      i.mappings.map((m) => `${m.range}@${m.fileOffset}`).join(",")
    }]`
  );

Deno.test("device memory", async (t) => {
  await t.step("mapToGuest places a priority-0 non-DMA region with the mappings", () => {
    using f = new RegionFixture();
    const target = new RecordingDmaTarget();
    using _dma = f.manager.addDmaTarget(target, false);
    const { control, region } = newDeviceMemoryMapper(f.manager).newRegion(0x4000n, "fb");
    region.map(0x1000n, f.backing, 0x8000n, 0x2000n, true);
    control.mapToGuest(0x20000n, true);
    assert.deepEqual(describe(f), ["fb 0x20000-0x24000 p0 active [0x1000-0x3000@32768]"]);
    assert.deepEqual(f.takePartitionEvents(), ["map 0x20000-0x24000 rw"]);
    assert.deepEqual(f.va.entries().map((e) => `${e.range} ${e.fileOffset}`), [
      "0x21000-0x23000 32768",
    ]);
    assert.deepEqual(target.events, []);
    assert.equal(`${control.guestRange}`, "0x20000-0x24000");
    assert.equal(control.isActive, true);
  });

  await t.step("live region map/unmap follow into the guest", () => {
    using f = new RegionFixture();
    const { control, region } = newDeviceMemoryMapper(f.manager).newRegion(0x4000n, "fb");
    control.mapToGuest(0x20000n, false);
    region.map(0x0n, f.backing, 0n, 0x1000n, true);
    assert.deepEqual(f.va.entries().map((e) => `${e.range} ${e.writable}`), [
      "0x20000-0x21000 false",
    ]);
    region.unmap(0x0n, 0x4000n);
    assert.deepEqual(f.va.entries(), []);
    assert.deepEqual(region.mappings, []);
  });

  await t.step("mapping again elsewhere moves the region; same place changes writability", () => {
    using f = new RegionFixture();
    const { control, region } = newDeviceMemoryMapper(f.manager).newRegion(0x2000n, "rom");
    region.map(0n, f.backing, 0n, 0x2000n, false);
    control.mapToGuest(0x10000n, false);
    f.takePartitionEvents();
    control.mapToGuest(0x30000n, false);
    assert.deepEqual(f.takePartitionEvents(), ["unmap 0x10000-0x12000", "map 0x30000-0x32000 ro"]);
    assert.deepEqual(describe(f), ["rom 0x30000-0x32000 p0 active [0x0-0x2000@0]"]);
    control.mapToGuest(0x30000n, true);
    assert.deepEqual(f.takePartitionEvents(), ["unmap 0x30000-0x32000", "map 0x30000-0x32000 rw"]);
    assert.equal(f.manager.regionCount, 1);
    control.unmapFromGuest();
    assert.deepEqual(f.takePartitionEvents(), ["unmap 0x30000-0x32000"]);
    assert.equal(f.manager.regionCount, 0);
    assert.equal(control.guestRange, undefined);
    control.unmapFromGuest();
  });

  await t.step("RAM wins over device memory", () => {
    using f = new RegionFixture();
    const ram = f.manager.newRegion("ram", r(0, 0x100000), 255, true);
    ram.map(RWX);
    const { control } = newDeviceMemoryMapper(f.manager).newRegion(0x20000n, "vga");
    control.mapToGuest(0xa0000n, true);
    assert.equal(control.isActive, false);
    ram.unmap();
    assert.equal(control.isActive, true);
  });

  await t.step("a refused move leaves the region where it was", () => {
    using f = new RegionFixture();
    f.manager.newRegion("other", r(0x40000, 0x42000), 0, false);
    const { control } = newDeviceMemoryMapper(f.manager).newRegion(0x2000n, "dev");
    control.mapToGuest(0x10000n, true);
    assert.throws(() => control.mapToGuest(0x41000n, true), {
      name: "RegionError",
      message: "memory region dev overlaps with existing region other: dev is " +
        "0x41000-0x43000 at priority 0, other is 0x40000-0x42000 at priority 0; regions of " +
        "equal priority that overlap must have the same range",
    });
    assert.equal(`${control.guestRange}`, "0x10000-0x12000");
    assert.equal(control.isActive, true);
    assert.equal(f.manager.regionCount, 2);
  });

  await t.step("bad offsets, overlaps and partial unmaps are errors that change nothing", () => {
    using f = new RegionFixture();
    const { control, region } = newDeviceMemoryMapper(f.manager).newRegion(0x4000n, "bar");
    control.mapToGuest(0x10000n, true);
    region.map(0x1000n, f.backing, 0n, 0x2000n, true);
    assert.throws(() => region.map(0x3000n, f.backing, 0n, 0x2000n, true), (e: unknown) => {
      assert.ok(e instanceof RegionError);
      assert.equal(e.kind, "mappingOutsideRegion");
      assert.equal(
        e.message,
        "range 0x3000-0x5000 is outside device memory region bar (0x4000 bytes)",
      );
      return true;
    });
    assert.throws(() => region.map(0x2000n, f.backing, 0n, 0x1000n, true), {
      name: "RegionError",
      message: "mapping 0x2000-0x3000 overlaps mapping 0x1000-0x3000 in device memory region bar",
    });
    assert.throws(() => region.unmap(0x2000n, 0x2000n), {
      name: "RegionError",
      message:
        "mapping 0x1000-0x3000 of device memory region bar is only partly inside 0x2000-0x4000",
    });
    assert.throws(() => region.map(0x800n, f.backing, 0n, 0x1000n, true), RangeError);
    assert.throws(() => region.unmap(0x0n, 0x5000n), RegionError);
    assert.throws(() => newDeviceMemoryMapper(f.manager).newRegion(0x1800n, "odd"), RangeError);
    assert.deepEqual(describe(f), ["bar 0x10000-0x14000 p0 active [0x1000-0x3000@0]"]);
    assert.deepEqual(f.va.entries().map((e) => `${e.range}`), ["0x11000-0x13000"]);
  });

  await t.step("placing past the address space is refused", () => {
    using f = new RegionFixture();
    const { control } = newDeviceMemoryMapper(f.manager).newRegion(0x2000n, "far");
    assert.throws(() => control.mapToGuest(0xff000n, true), RegionError);
    assert.equal(f.manager.regionCount, 0);
    assert.equal(control.guestRange, undefined);
  });
});

/** A second descriptor of `fd`'s file, opened read-only (mapping it writable is EACCES). */
function readOnlyReopen(fd: OwnedFd): OwnedFd {
  return OwnedFd.open(`/proc/self/fd/${fd.fd}`, Fcntl.O_RDONLY);
}

/** Asserts `fn` fails as mmap refusing a writable mapping of a read-only descriptor. */
function assertPermissionDenied(fn: () => unknown): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SyscallError, `expected SyscallError, got ${e}`);
    assert.equal(e.message, "Permission denied");
    assert.equal(e.syscall, "mmap");
    assert.equal(e.code, "EACCES");
    return true;
  });
}

Deno.test("device memory failures change nothing", async (t) => {
  await t.step("a failing second mapping leaves no region and nothing mapped", () => {
    const MiB = 1n << 20n;
    using manager = new GuestMemoryBuilder().build(
      MemoryLayout.fromGaps(MiB, [new MemoryRange(MiB, 2n * MiB)]),
    );
    const partition = new RecordingPartition();
    using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
    const memory = manager.client().guestMemory();
    using vram = shrinkSealedMemfd("vram", 0x4000n);
    using readOnly = readOnlyReopen(vram);
    const { control, region } = manager.deviceMemoryMapper().newRegion(0x4000n, "bar");
    region.map(0n, vram, 0n, 0x1000n, true);
    region.map(0x2000n, readOnly, 0x2000n, 0x1000n, true);
    const before = manager.inspect();
    partition.clearEvents();

    assertPermissionDenied(() => control.mapToGuest(MiB, true));
    assert.deepEqual(manager.inspect(), before);
    assert.equal(memory.isMapped(MiB, 0x1000n), false);
    assert.equal(memory.isMapped(MiB + 0x2000n, 0x1000n), false);
    assert.deepEqual(partition.events, []);
    assert.equal(control.guestRange, undefined);
    assert.equal(control.isActive, false);
    assert.equal(region.mappings.length, 2);
    // Read-only, the same region places fine.
    control.mapToGuest(MiB, false);
    assert.equal(memory.isMapped(MiB, 0x1000n), true);
    assert.equal(memory.isMapped(MiB + 0x2000n, 0x1000n), true);
  });

  await t.step("DMA targets hear an unmap for every map of a failed activation", () => {
    using f = new RegionFixture();
    using readOnly = readOnlyReopen(f.backing);
    const target = new RecordingDmaTarget();
    using _dma = f.manager.addDmaTarget(target, false);
    const region = f.manager.newRegion("dma", r(0x10000, 0x14000), 7, true);
    region.addMapping(r(0, 0x1000), f.backing, 0n, true);
    region.addMapping(r(0x1000, 0x2000), f.backing, 0x1000n, true);
    region.addMapping(r(0x2000, 0x3000), readOnly, 0x2000n, true);
    f.takePartitionEvents();
    assertPermissionDenied(() => region.map(RWX));
    assert.deepEqual(target.take(), [
      "map 0x10000-0x11000",
      "map 0x11000-0x12000",
      "unmap 0x10000-0x11000",
      "unmap 0x11000-0x12000",
    ]);
    assert.deepEqual(f.va.entries(), []);
    assert.deepEqual(f.takePartitionEvents(), []);
    assert.equal(region.mapParams, undefined);
    assert.equal(region.isActive, false);
  });

  await t.step("a failed re-map shows again what was shown, with its params", () => {
    using f = new RegionFixture();
    using readOnly = readOnlyReopen(f.backing);
    const { control, region } = newDeviceMemoryMapper(f.manager).newRegion(0x4000n, "rom");
    region.map(0n, f.backing, 0n, 0x1000n, true);
    region.map(0x2000n, readOnly, 0x2000n, 0x1000n, true);
    control.mapToGuest(0x20000n, false);
    const entries = f.va.entries().map((e) => `${e.range} ${e.fd} ${e.writable}`);
    const infos = describe(f);
    f.takePartitionEvents();
    assertPermissionDenied(() => control.mapToGuest(0x20000n, true));
    assert.deepEqual(f.va.entries().map((e) => `${e.range} ${e.fd} ${e.writable}`), entries);
    assert.deepEqual(describe(f), infos);
    assert.deepEqual(f.manager.regionInfos()[0].mapParams, RX);
    assert.deepEqual(f.partitionMap(), ["0x20000-0x24000 ro"]);
    assert.deepEqual(f.takePartitionEvents(), ["unmap 0x20000-0x24000", "map 0x20000-0x24000 ro"]);
  });

  await t.step("a failing mapping added to a placed region changes nothing", () => {
    using f = new RegionFixture();
    using readOnly = readOnlyReopen(f.backing);
    const { control, region } = newDeviceMemoryMapper(f.manager).newRegion(0x4000n, "fb");
    region.map(0n, f.backing, 0n, 0x1000n, true);
    control.mapToGuest(0x20000n, true);
    f.takePartitionEvents();
    assertPermissionDenied(() => region.map(0x2000n, readOnly, 0x2000n, 0x1000n, true));
    assert.deepEqual(describe(f), ["fb 0x20000-0x24000 p0 active [0x0-0x1000@0]"]);
    assert.deepEqual(region.mappings.map((m) => `${m.range}`), ["0x0-0x1000"]);
    assert.deepEqual(f.va.entries().map((e) => `${e.range}`), ["0x20000-0x21000"]);
    assert.deepEqual(f.takePartitionEvents(), []);
  });

  await t.step("unmapping what hides a region that cannot be shown changes nothing", () => {
    using f = new RegionFixture();
    using readOnly = readOnlyReopen(f.backing);
    const ram = f.manager.newRegion("ram", r(0, 0x80000), 255, true);
    ram.addMapping(r(0, 0x80000), f.backing, 0n, true);
    ram.map(RWX);
    const mapper = newDeviceMemoryMapper(f.manager);
    // Hidden under RAM, so nothing is mapped yet and nothing fails yet.
    const bad = mapper.newRegion(0x2000n, "bad");
    bad.region.map(0n, readOnly, 0n, 0x2000n, true);
    bad.control.mapToGuest(0x20000n, true);
    const before = f.manager.inspect();
    const entries = f.va.entries().map((e) => `${e.range} ${e.fd} ${e.writable}`);
    const map = f.partitionMap();
    f.takePartitionEvents();
    assertPermissionDenied(() => ram.unmap());
    assert.deepEqual(f.manager.inspect(), before);
    assert.deepEqual(f.va.entries().map((e) => `${e.range} ${e.fd} ${e.writable}`), entries);
    assert.deepEqual(f.partitionMap(), map);
    assert.deepEqual(f.takePartitionEvents(), ["unmap 0x0-0x80000", "map 0x0-0x80000 rw"]);
    assert.deepEqual(ram.mapParams, RWX);
    // Removing it fails the same way and keeps it.
    assertPermissionDenied(() => ram[Symbol.dispose]());
    assert.equal(ram.isRemoved, false);
    assert.deepEqual(f.manager.inspect(), before);
    // Same for a device region placed over the bad one.
    bad.control.unmapFromGuest();
    ram.unmap();
    const good = mapper.newRegion(0x2000n, "good");
    good.control.mapToGuest(0x20000n, false);
    bad.control.mapToGuest(0x20000n, true);
    assert.deepEqual([good.control.isActive, bad.control.isActive], [true, false]);
    assertPermissionDenied(() => good.control.unmapFromGuest());
    assert.equal(`${good.control.guestRange}`, "0x20000-0x22000");
    assert.deepEqual([good.control.isActive, bad.control.isActive], [true, false]);
    bad.control.unmapFromGuest();
    good.control.unmapFromGuest();
    assert.equal(f.manager.regionCount, 1);
  });

  await t.step("a move refused by the overlap check keeps the first added region visible", () => {
    using f = new RegionFixture();
    f.manager.newRegion("other", r(0x40000, 0x42000), 0, false);
    const mapper = newDeviceMemoryMapper(f.manager);
    const first = mapper.newRegion(0x2000n, "first");
    const second = mapper.newRegion(0x2000n, "second");
    first.region.map(0n, f.backing, 0n, 0x2000n, true);
    second.region.map(0n, f.backing, 0x2000n, 0x2000n, true);
    first.control.mapToGuest(0x10000n, true);
    second.control.mapToGuest(0x10000n, true);
    const infos = describe(f);
    assert.deepEqual(infos, [
      "other 0x40000-0x42000 p0 inactive []",
      "first 0x10000-0x12000 p0 active [0x0-0x2000@0]",
      "second 0x10000-0x12000 p0 inactive [0x0-0x2000@8192]",
    ]);
    const before = f.manager.inspect();
    f.takePartitionEvents();
    assert.throws(() => first.control.mapToGuest(0x41000n, true), {
      name: "RegionError",
      message:
        "memory region first overlaps with existing region other: first is 0x41000-0x43000 at priority 0, other is 0x40000-0x42000 at priority 0; regions of equal priority that overlap must have the same range",
    });
    // Refused before anything was taken down: the partition heard nothing.
    assert.deepEqual(f.takePartitionEvents(), []);
    assert.deepEqual(describe(f), infos);
    assert.deepEqual(f.manager.inspect(), before);
    assert.equal(first.control.isActive, true);
    assert.equal(second.control.isActive, false);
    assert.deepEqual(f.va.entries().map((e) => `${e.range} ${e.fileOffset}`), [
      "0x10000-0x12000 0",
    ]);
    assert.deepEqual(f.partitionMap(), ["0x10000-0x12000 rw"]);
    // Still the first: unplacing it shows the second, placing it again hides it.
    first.control.unmapFromGuest();
    assert.equal(second.control.isActive, true);
  });

  await t.step("a move that fails to map puts the region back in its place", () => {
    using f = new RegionFixture();
    using readOnly = readOnlyReopen(f.backing);
    const mapper = newDeviceMemoryMapper(f.manager);
    const first = mapper.newRegion(0x2000n, "first");
    const second = mapper.newRegion(0x2000n, "second");
    first.region.map(0n, readOnly, 0n, 0x2000n, true);
    first.control.mapToGuest(0x10000n, false);
    second.control.mapToGuest(0x10000n, true);
    const before = f.manager.inspect();
    const entries = f.va.entries().map((e) => `${e.range} ${e.fd} ${e.writable}`);
    assertPermissionDenied(() => first.control.mapToGuest(0x30000n, true));
    assert.deepEqual(f.manager.inspect(), before);
    assert.deepEqual(f.va.entries().map((e) => `${e.range} ${e.fd} ${e.writable}`), entries);
    assert.deepEqual(describe(f), [
      "first 0x10000-0x12000 p0 active [0x0-0x2000@0]",
      "second 0x10000-0x12000 p0 inactive []",
    ]);
    assert.equal(`${first.control.guestRange}`, "0x10000-0x12000");
    assert.deepEqual(f.partitionMap(), ["0x10000-0x12000 ro"]);
  });
});

Deno.test("device memory backings must not be able to shrink under their mappings", async (t) => {
  const expected = (name: string, range: string) =>
    `mapping ${range} of device memory region ${name} is backed by a file that is not sealed against shrinking, so its owner could truncate it and crash the process with SIGBUS: seal it with F_SEAL_SHRINK (SharedMemoryBacking.create does) or pass { allowShrinkable: true } to map`;
  const refused = (fn: () => void, name: string, range: string) =>
    assert.throws(fn, (e) => {
      assert.ok(e instanceof RegionError);
      assert.equal(e.kind, "shrinkableBacking");
      assert.equal(e.detail.kind === "shrinkableBacking" && `${e.detail.range}`, range);
      assert.equal(e.message, expected(name, range));
      return true;
    });

  await t.step("a memfd without F_SEAL_SHRINK is refused and nothing changes", () => {
    using f = new RegionFixture();
    using unsealed = OwnedFd.memfd("unsealed", 0);
    unsealed.truncate(0x4000n);
    const { control, region } = newDeviceMemoryMapper(f.manager).newRegion(0x4000n, "fb");
    control.mapToGuest(0x20000n, true);
    f.takePartitionEvents();
    refused(() => region.map(0x1000n, unsealed, 0n, 0x2000n, true), "fb", "0x1000-0x3000");
    assert.deepEqual(region.mappings, []);
    assert.deepEqual(f.va.entries(), []);
    assert.deepEqual(f.takePartitionEvents(), []);
  });

  await t.step("a memfd with other seals but not F_SEAL_SHRINK is refused", () => {
    using f = new RegionFixture();
    using grow = OwnedFd.memfd("grow-sealed", Memfd.MFD_ALLOW_SEALING);
    grow.truncate(0x1000n);
    grow.addSeals(Fcntl.F_SEAL_GROW);
    const { region } = newDeviceMemoryMapper(f.manager).newRegion(0x1000n, "rom");
    refused(() => region.map(0n, grow, 0n, 0x1000n, false), "rom", "0x0-0x1000");
  });

  await t.step("a sealed memfd is accepted", () => {
    using f = new RegionFixture();
    using sealed = shrinkSealedMemfd("sealed", 0x4000n);
    const { control, region } = newDeviceMemoryMapper(f.manager).newRegion(0x4000n, "fb");
    region.map(0n, sealed, 0n, 0x4000n, true);
    control.mapToGuest(0x20000n, true);
    assert.deepEqual(f.va.entries().map((e) => `${e.range}`), ["0x20000-0x24000"]);
    // The seal is what makes it safe: the owner cannot shrink it any more.
    assert.throws(
      () => sealed.truncate(0x1000n),
      (e) => e instanceof SyscallError && e.code === "EPERM",
    );
  });

  await t.step("a regular file (no seals) is refused unless the caller opts in", async () => {
    const dir = await Deno.makeTempDir();
    try {
      const path = `${dir}/backing`;
      await Deno.writeFile(path, new Uint8Array(0x2000));
      using f = new RegionFixture();
      using file = OwnedFd.open(path, Fcntl.O_RDWR);
      const { control, region } = newDeviceMemoryMapper(f.manager).newRegion(0x2000n, "disk");
      refused(() => region.map(0n, file, 0n, 0x2000n, true), "disk", "0x0-0x2000");
      region.map(0n, file, 0n, 0x2000n, true, { allowShrinkable: true });
      control.mapToGuest(0x40000n, true);
      assert.deepEqual(f.va.entries().map((e) => `${e.range}`), ["0x40000-0x42000"]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  await t.step("a character device has no size to lose and is accepted", () => {
    using f = new RegionFixture();
    using zero = OwnedFd.open("/dev/zero", Fcntl.O_RDWR);
    const { control, region } = newDeviceMemoryMapper(f.manager).newRegion(0x1000n, "zero");
    region.map(0n, zero, 0n, 0x1000n, false);
    control.mapToGuest(0x30000n, false);
    assert.deepEqual(f.va.entries().map((e) => `${e.range}`), ["0x30000-0x31000"]);
  });
});
