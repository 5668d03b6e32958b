import assert from "node:assert/strict";
import { RegionError } from "../regions/region_error.ts";
import { r, RecordingDmaTarget, RegionFixture, RWX } from "./support/region_fixture.ts";
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
