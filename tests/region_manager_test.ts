import assert from "node:assert/strict";
import { setWarningHandler, type Warning } from "../diagnostics/warnings.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { VaMapper } from "../mapping/_va_mapper.ts";
import { PartitionMapper } from "../partition/_partition_mapper.ts";
import { RecordingPartition } from "../testing/recording_partition.ts";
import type { Partition } from "../partition/partition.ts";
import { RegionError } from "../regions/region_error.ts";
import type { RegionHandle } from "../regions/_region_handle.ts";
import { RegionManager } from "../regions/_region_manager.ts";
import { protectionAt, vaProtections } from "./support/proc_maps.ts";
import { r, RecordingDmaTarget, RegionFixture, RWX, RX } from "./support/region_fixture.ts";
import { newDeviceMemoryMapper } from "../device_memory/device_memory_mapper.ts";

Deno.test("region admission", async (t) => {
  await t.step("reference overlap sequence", () => {
    using f = new RegionFixture(0x100000n);
    const m = f.manager;
    const add = (priority: number, start: number, end: number): RegionHandle => {
      const handle = m.newRegion(`${priority}`, r(start, end), priority, false);
      handle.map(RWX);
      return handle;
    };
    const overlapErr = (
      priority: number,
      start: number,
      end: number,
      existing: string,
      message: string,
    ) =>
      assert.throws(() => add(priority, start, end), (e: unknown) => {
        assert.ok(e instanceof RegionError);
        assert.equal(e.kind, "overlap");
        assert.equal(e.message, message);
        assert.equal((e.detail as { existingName: string }).existingName, existing);
        return true;
      });

    const high = add(1, 0x1000, 0x3000);
    overlapErr(
      0,
      0x2000,
      0x4000,
      "1",
      "memory region 0 overlaps with existing region 1: 0 is 0x2000-0x4000 at priority 0, " +
        "1 is 0x1000-0x3000 at priority 1; a region of lower priority must lie inside the " +
        "region it overlaps",
    );
    const low = add(0, 0x1000, 0x3000);
    high[Symbol.dispose]();
    overlapErr(
      1,
      0x2000,
      0x4000,
      "0",
      "memory region 1 overlaps with existing region 0: 1 is 0x2000-0x4000 at priority 1, " +
        "0 is 0x1000-0x3000 at priority 0; a region of higher priority must contain the " +
        "region it overlaps",
    );
    overlapErr(
      1,
      0x2000,
      0x3000,
      "0",
      "memory region 1 overlaps with existing region 0: 1 is 0x2000-0x3000 at priority 1, " +
        "0 is 0x1000-0x3000 at priority 0; a region of higher priority must contain the " +
        "region it overlaps",
    );
    add(1, 0x0, 0x10000);
    low[Symbol.dispose]();
    overlapErr(
      0,
      0x0,
      0x20000,
      "1",
      "memory region 0 overlaps with existing region 1: 0 is 0x0-0x20000 at priority 0, " +
        "1 is 0x0-0x10000 at priority 1; a region of lower priority must lie inside the " +
        "region it overlaps",
    );
    add(0, 0x1000, 0x8000);
    assert.deepEqual(m.regionInfos().map((i) => `${i.name} ${i.range} ${i.active}`), [
      "1 0x0-0x10000 true",
      "0 0x1000-0x8000 false",
    ]);
  });

  await t.step("the error names the first offender in insertion order", () => {
    using f = new RegionFixture(0x100000n);
    const m = f.manager;
    m.newRegion("b", r(0x4000, 0x5000), 5, false);
    m.newRegion("a", r(0x1000, 0x2000), 5, false);
    // Refused by both: "b" was added first, although "a" comes first by address.
    assert.throws(
      () => m.newRegion("c", r(0x0, 0x8000), 5, false),
      {
        message: "memory region c overlaps with existing region b: c is 0x0-0x8000 at " +
          "priority 5, b is 0x4000-0x5000 at priority 5; regions of equal priority that " +
          "overlap must have the same range",
      },
    );
    assert.equal(m.regionCount, 2);
  });

  await t.step("equal priority and identical range nest, earlier added wins", () => {
    using f = new RegionFixture(0x100000n);
    const m = f.manager;
    const first = m.newRegion("first", r(0x1000, 0x3000), 3, false);
    const second = m.newRegion("second", r(0x1000, 0x3000), 3, false);
    const lower = m.newRegion("lower", r(0x1000, 0x3000), 2, false);
    const higher = m.newRegion("higher", r(0x1000, 0x3000), 4, false);
    second.map(RWX);
    assert.equal(second.isActive, true);
    first.map(RWX);
    assert.equal(first.isActive, true);
    assert.equal(second.isActive, false);
    lower.map(RX);
    assert.equal(lower.isActive, false);
    higher.map(RX);
    assert.deepEqual([higher, first, second, lower].map((h) => h.isActive), [
      true,
      false,
      false,
      false,
    ]);
    higher.unmap();
    first.unmap();
    assert.equal(second.isActive, true);
    second[Symbol.dispose]();
    assert.equal(lower.isActive, true);
    assert.deepEqual(f.partitionMap(), ["0x1000-0x3000 ro"]);
  });

  await t.step("a restored region takes back its place among identical ones", () => {
    using f = new RegionFixture(0x100000n);
    const m = f.manager;
    const names = () => m.regionInfos().map((i) => `${i.name}${i.active ? "*" : ""}`);
    const outer = m.newRegion("outer", r(0x1000, 0x3000), 5, false);
    const first = m.newRegion("first", r(0x1000, 0x3000), 3, false);
    const second = m.newRegion("second", r(0x1000, 0x3000), 3, false);
    const third = m.newRegion("third", r(0x1000, 0x3000), 3, false);
    const inner = m.newRegion("inner", r(0x2000, 0x3000), 1, false);
    for (const h of [first, second, third, inner]) h.map(RWX);
    // Enough removals that the insertion order is compacted meanwhile.
    for (let i = 0; i < 40; i++) {
      m.newRegion(`t${i}`, r(0x10000, 0x11000), 0, false)[Symbol.dispose]();
    }
    const before = m.inspect();
    for (const victim of [first, second, third]) {
      victim[Symbol.dispose]();
      victim.restore();
      assert.equal(victim.isRemoved, false);
      assert.equal(victim.mapParams, undefined);
      victim.map(RWX);
      assert.deepEqual(names(), ["outer", "first*", "second", "third", "inner"]);
      assert.deepEqual(m.inspect(), before);
    }
    outer.map(RX);
    first.unmap();
    assert.deepEqual(names(), ["outer*", "first", "second", "third", "inner"]);
    outer.unmap();
    assert.deepEqual(names(), ["outer", "first", "second*", "third", "inner"]);
    second[Symbol.dispose]();
    assert.deepEqual(names(), ["outer", "first", "third*", "inner"]);
    // Restoring is a no-op for a live region, refused when something is in the way.
    third.restore();
    second.restore();
    assert.deepEqual(names(), ["outer", "first", "second", "third*", "inner"]);
    for (const h of [first, second, third]) h[Symbol.dispose]();
    m.newRegion("blocker", r(0x1000, 0x2000), 3, false);
    assert.throws(() => second.restore(), {
      name: "RegionError",
      message:
        "memory region second overlaps with existing region blocker: second is 0x1000-0x3000 at priority 3, blocker is 0x1000-0x2000 at priority 3; regions of equal priority that overlap must have the same range",
    });
    assert.equal(second.isRemoved, true);
    assert.deepEqual(names(), ["outer", "inner*", "blocker"]);
  });

  await t.step("checkMove refuses what a move would, and changes nothing", () => {
    using f = new RegionFixture(0x100000n);
    const m = f.manager;
    const outer = m.newRegion("outer", r(0x10000, 0x20000), 5, false);
    const inner = m.newRegion("inner", r(0x11000, 0x12000), 1, false);
    const other = m.newRegion("other", r(0x40000, 0x50000), 5, false);
    inner.map(RX);
    outer.map(RWX);
    other.map(RWX);
    const before = m.inspect();
    f.takePartitionEvents();
    // Overlapping only its own old place is fine.
    outer.checkMove(r(0x18000, 0x28000));
    assert.throws(() => outer.checkMove(r(0x38000, 0x48000)), {
      name: "RegionError",
      message:
        "memory region outer overlaps with existing region other: outer is 0x38000-0x48000 at priority 5, other is 0x40000-0x50000 at priority 5; regions of equal priority that overlap must have the same range",
    });
    assert.throws(() => outer.checkMove(r(0xf8000, 0x108000)), {
      name: "RegionError",
      message:
        "memory region outer at 0xf8000-0x108000 is outside the 0x100000-byte guest address space",
    });
    // A lower region may not leave the region that contains it.
    assert.throws(() => inner.checkMove(r(0x1f000, 0x21000)), {
      name: "RegionError",
      message:
        "memory region inner overlaps with existing region outer: inner is 0x1f000-0x21000 at priority 1, outer is 0x10000-0x20000 at priority 5; a region of lower priority must lie inside the region it overlaps",
    });
    inner.checkMove(r(0x1f000, 0x20000));
    assert.deepEqual(m.inspect(), before);
    assert.deepEqual(f.takePartitionEvents(), []);
    // The tree's counts survived the trials: unmapping outer shows inner.
    outer.unmap();
    assert.equal(inner.isActive, true);
    assert.deepEqual(f.partitionMap(), ["0x11000-0x12000 ro", "0x40000-0x50000 rw"]);
  });

  await t.step("bad priority and ranges past the reservation are refused", () => {
    using f = new RegionFixture(0x100000n);
    assert.throws(() => f.manager.newRegion("x", r(0, 0x1000), 256, false), {
      name: "RegionError",
      message: "memory region x priority 256 is not an integer in 0-255",
    });
    assert.throws(() => f.manager.newRegion("x", r(0, 0x1000), 1.5, false), RegionError);
    assert.throws(() => f.manager.newRegion("x", r(0xff000, 0x101000), 0, false), {
      name: "RegionError",
      message:
        "memory region x at 0xff000-0x101000 is outside the 0x100000-byte guest address space",
    });
    assert.equal(f.manager.regionCount, 0);
  });
});

Deno.test("region activation", async (t) => {
  await t.step("highest priority mapped region is what partitions see", () => {
    using f = new RegionFixture(0x100000n);
    const m = f.manager;
    const ram = m.newRegion("ram", r(0, 0x100000), 255, true);
    const dev = m.newRegion("dev", r(0xa0000, 0xc0000), 0, false);
    dev.map(RWX);
    assert.equal(dev.isActive, true);
    assert.deepEqual(f.takePartitionEvents(), ["map 0xa0000-0xc0000 rw"]);
    ram.map(RWX);
    assert.equal(dev.isActive, false);
    assert.equal(ram.isActive, true);
    assert.deepEqual(f.takePartitionEvents(), ["unmap 0xa0000-0xc0000", "map 0x0-0x100000 rw"]);
    ram.unmap();
    assert.deepEqual(f.takePartitionEvents(), ["unmap 0x0-0x100000", "map 0xa0000-0xc0000 rw"]);
    ram.map(RX);
    assert.deepEqual(f.takePartitionEvents(), ["unmap 0xa0000-0xc0000", "map 0x0-0x100000 ro"]);
  });

  await t.step("mapping with the same params does nothing; new params re-map", () => {
    using f = new RegionFixture(0x100000n);
    const ram = f.manager.newRegion("ram", r(0, 0x10000), 255, true);
    ram.map(RWX);
    f.takePartitionEvents();
    ram.map({ ...RWX });
    assert.deepEqual(f.takePartitionEvents(), []);
    ram.map(RX);
    assert.deepEqual(f.takePartitionEvents(), ["unmap 0x0-0x10000", "map 0x0-0x10000 ro"]);
    assert.deepEqual(ram.mapParams, RX);
  });

  await t.step("mapping under a mapped region only records params", () => {
    using f = new RegionFixture(0x100000n);
    const outer = f.manager.newRegion("outer", r(0, 0x10000), 10, false);
    const inner = f.manager.newRegion("inner", r(0x2000, 0x4000), 5, false);
    outer.map(RWX);
    f.takePartitionEvents();
    inner.map(RX);
    assert.deepEqual(f.takePartitionEvents(), []);
    assert.equal(inner.isActive, false);
    assert.deepEqual(inner.mapParams, RX);
    outer[Symbol.dispose]();
    assert.deepEqual(f.takePartitionEvents(), ["unmap 0x0-0x10000", "map 0x2000-0x4000 ro"]);
    assert.equal(inner.isActive, true);
  });

  await t.step("unmapping a region reveals all topmost mapped regions beneath, in order", () => {
    using f = new RegionFixture(0x100000n);
    const m = f.manager;
    const top = m.newRegion("top", r(0, 0x20000), 9, false);
    const mid = m.newRegion("mid", r(0x0, 0x8000), 8, false);
    const deep = m.newRegion("deep", r(0x1000, 0x2000), 7, false);
    const side = m.newRegion("side", r(0x10000, 0x12000), 3, false);
    deep.map(RWX);
    side.map(RWX);
    top.map(RWX);
    f.takePartitionEvents();
    top.unmap();
    assert.deepEqual(f.takePartitionEvents(), [
      "unmap 0x0-0x20000",
      "map 0x1000-0x2000 rw",
      "map 0x10000-0x12000 rw",
    ]);
    mid.map(RX);
    assert.deepEqual(f.takePartitionEvents(), ["unmap 0x1000-0x2000", "map 0x0-0x8000 ro"]);
    assert.deepEqual(f.partitionMap(), ["0x0-0x8000 ro", "0x10000-0x12000 rw"]);
  });

  await t.step("the VA reservation follows the active regions", () => {
    using f = new RegionFixture(0x100000n);
    const ram = f.manager.newRegion("ram", r(0, 0x10000), 255, true);
    ram.addMapping(r(0, 0x4000), f.backing, 0x10000n, true);
    ram.addMapping(r(0x8000, 0x10000), f.backing, 0x20000n, false);
    const perms = () => {
      const list = vaProtections(f.va.base, f.va.size);
      return [0x0n, 0x4000n, 0x8000n].map((o) => protectionAt(list, o));
    };
    assert.deepEqual(perms(), ["---p", "---p", "---p"]);
    ram.map(RWX);
    assert.deepEqual(perms(), ["rw-s", "---p", "r--s"]);
    assert.deepEqual(
      f.va.entries().map((e) =>
        `${e.range} ${e.writable} ${e.fd === f.backing.fd} ${e.fileOffset}`
      ),
      ["0x0-0x4000 true true 65536", "0x8000-0x10000 false true 131072"],
    );
    // Read-only: the host mapping stays (writable where the mapping is), the
    // table refuses host writes.
    ram.map(RX);
    assert.deepEqual(perms(), ["rw-s", "---p", "r--s"]);
    assert.deepEqual(f.va.entries().map((e) => `${e.range} ${e.writable}`), [
      "0x0-0x4000 false",
      "0x8000-0x10000 false",
    ]);
    ram.unmap();
    assert.deepEqual(perms(), ["---p", "---p", "---p"]);
    assert.deepEqual(f.va.entries(), []);
  });
});

Deno.test("region mappings", async (t) => {
  await t.step("live add and remove go to the VA but not to partitions", () => {
    using f = new RegionFixture(0x100000n);
    const ram = f.manager.newRegion("ram", r(0x10000, 0x20000), 255, true);
    ram.map(RWX);
    f.takePartitionEvents();
    ram.addMapping(r(0x1000, 0x3000), f.backing, 0n, true);
    assert.deepEqual(f.va.entries().map((e) => `${e.range}`), ["0x11000-0x13000"]);
    ram.removeMappings(r(0, 0x10000));
    assert.deepEqual(f.va.entries(), []);
    assert.deepEqual(f.takePartitionEvents(), []);
  });

  await t.step("overlapping mappings are an error and change nothing", () => {
    using f = new RegionFixture(0x100000n);
    const ram = f.manager.newRegion("ram", r(0x10000, 0x20000), 255, true);
    ram.addMapping(r(0x1000, 0x3000), f.backing, 0n, true);
    assert.throws(() => ram.addMapping(r(0x2000, 0x4000), f.backing, 0n, true), (e: unknown) => {
      assert.ok(e instanceof RegionError);
      assert.equal(e.kind, "mappingOverlap");
      assert.equal(
        e.message,
        "mapping 0x2000-0x4000 overlaps mapping 0x1000-0x3000 in memory region ram",
      );
      return true;
    });
    assert.throws(() => ram.addMapping(r(0x0, 0x11000), f.backing, 0n, true), {
      name: "RegionError",
      message: "mapping 0x0-0x11000 is outside memory region ram (0x10000 bytes)",
    });
    assert.deepEqual(ram.mappings.map((m) => `${m.range}`), ["0x1000-0x3000"]);
  });

  await t.step("partial removal is an error and changes nothing", () => {
    using f = new RegionFixture(0x100000n);
    const ram = f.manager.newRegion("ram", r(0x10000, 0x20000), 255, true);
    ram.addMapping(r(0x0, 0x1000), f.backing, 0n, true);
    ram.addMapping(r(0x1000, 0x3000), f.backing, 0n, true);
    ram.map(RWX);
    assert.throws(() => ram.removeMappings(r(0x0, 0x2000)), (e: unknown) => {
      assert.ok(e instanceof RegionError);
      assert.equal(e.kind, "partialRemoval");
      assert.equal(
        e.message,
        "mapping 0x1000-0x3000 of memory region ram is only partly inside 0x0-0x2000",
      );
      return true;
    });
    assert.equal(ram.mappings.length, 2);
    assert.deepEqual(f.va.entries().map((e) => `${e.range}`), [
      "0x10000-0x11000",
      "0x11000-0x13000",
    ]);
  });

  await t.step("a removed region refuses every operation", () => {
    using f = new RegionFixture(0x100000n);
    const ram = f.manager.newRegion("ram", r(0, 0x10000), 255, true);
    ram[Symbol.dispose]();
    ram[Symbol.dispose](); // idempotent
    assert.equal(ram.isRemoved, true);
    const removed = { name: "RegionError", message: "memory region ram has been removed" };
    assert.throws(() => ram.map(RWX), removed);
    assert.throws(() => ram.unmap(), removed);
    assert.throws(() => ram.addMapping(r(0, 0x1000), f.backing, 0n, true), removed);
    assert.throws(() => ram.removeMappings(r(0, 0x1000)), removed);
  });
});

Deno.test("region partitions", async (t) => {
  await t.step("a partition added later gets one mapRange per active region", () => {
    using f = new RegionFixture(0x100000n, { partition: false });
    const a = f.manager.newRegion("a", r(0x10000, 0x20000), 255, true);
    const b = f.manager.newRegion("b", r(0x0, 0x8000), 255, true);
    f.manager.newRegion("c", r(0x30000, 0x40000), 255, true);
    a.map(RWX);
    b.map(RX);
    f.manager.addPartition(f.mapper);
    assert.deepEqual(f.takePartitionEvents(), ["map 0x0-0x8000 ro", "map 0x10000-0x20000 rw"]);
    assert.equal(
      f.partition.mappings()[1].hostAddress,
      f.va.base + 0x10000n,
    );
    f.manager.removePartition(f.mapper);
    assert.deepEqual(f.takePartitionEvents(), ["unmap 0x0-0x8000", "unmap 0x10000-0x20000"]);
    a.unmap();
    assert.deepEqual(f.takePartitionEvents(), []);
  });

  await t.step("a failing partition is unwound and not attached", () => {
    using f = new RegionFixture(0x100000n, { partition: false });
    f.manager.newRegion("a", r(0x0, 0x1000), 255, true).map(RWX);
    f.manager.newRegion("b", r(0x1000, 0x2000), 255, true).map(RWX);
    const log: string[] = [];
    const failing: Partition = {
      mapRange: (_h, _s, gpa) => {
        if (gpa === 0x1000n) throw new Error("no slot");
        log.push(`map ${gpa}`);
      },
      unmapRange: (gpa) => void log.push(`unmap ${gpa}`),
    };
    const mapper = new PartitionMapper(failing, f.va, 0n, false);
    assert.throws(() => f.manager.addPartition(mapper), {
      name: "PartitionMapperError",
      message: "failed to map range to partition",
    });
    assert.deepEqual(log, ["map 0", "unmap 0"]);
    f.manager.newRegion("c", r(0x2000, 0x3000), 255, true).map(RWX);
    assert.deepEqual(log, ["map 0", "unmap 0"]);
  });

  await t.step("a partition that fails to map makes the map fail, changing nothing", () => {
    using f = new RegionFixture(0x100000n);
    const failing: Partition = {
      mapRange: () => {
        throw new Error("no slot");
      },
      unmapRange: () => {},
    };
    f.manager.addPartition(new PartitionMapper(failing, f.va, 0n, false));
    const target = new RecordingDmaTarget();
    using _dma = f.manager.addDmaTarget(target, false);
    const warnings: Warning[] = [];
    const previous = setWarningHandler((w) => warnings.push(w));
    try {
      const a = f.manager.newRegion("a", r(0x0, 0x1000), 255, true);
      a.addMapping(r(0, 0x1000), f.backing, 0n, true);
      assert.throws(() => a.map(RWX), (e) => {
        assert.ok(e instanceof RegionError);
        assert.equal(e.kind, "partitionMap");
        assert.equal(e.message, "failed to map memory region a at 0x0-0x1000 into a partition");
        assert.equal((e.cause as Error).message, "failed to map range to partition");
        assert.equal(((e.cause as Error).cause as Error).message, "no slot");
        return true;
      });
      assert.equal(a.isActive, false);
      assert.deepEqual(f.va.entries(), []);
      // The recording partition got it and lost it again; the DMA target too.
      assert.deepEqual(f.takePartitionEvents(), ["map 0x0-0x1000 rw", "unmap 0x0-0x1000"]);
      assert.deepEqual(target.take(), ["map 0x0-0x1000", "unmap 0x0-0x1000"]);
    } finally {
      setWarningHandler(previous);
    }
    assert.deepEqual(warnings, []);
  });

  await t.step("a partition that fails to unmap makes the unmap fail, changing nothing", () => {
    using f = new RegionFixture(0x100000n);
    let refuse = false;
    const recording = new RecordingPartition();
    const stuck: Partition = {
      mapRange: (host, size, gpa, w, x) => recording.mapRange(host, size, gpa, w, x),
      unmapRange: (gpa, size) => {
        if (refuse) throw new Error("busy");
        recording.unmapRange(gpa, size);
      },
    };
    const mapper = new PartitionMapper(stuck, f.va, 0n, false);
    f.manager.addPartition(mapper);
    const a = f.manager.newRegion("a", r(0x0, 0x1000), 255, true);
    a.addMapping(r(0, 0x1000), f.backing, 0n, true);
    a.map(RWX);
    f.takePartitionEvents();
    refuse = true;
    const expected = {
      name: "RegionError",
      kind: "partitionUnmap",
      message: "failed to unmap memory region a at 0x0-0x1000 from a partition",
    };
    assert.throws(() => a.unmap(), expected);
    assert.equal(a.isActive, true);
    assert.deepEqual(f.va.entries().map((e) => `${e.range}`), ["0x0-0x1000"]);
    // The fixture's partition lost the region and got it back.
    assert.deepEqual(f.takePartitionEvents(), ["unmap 0x0-0x1000", "map 0x0-0x1000 rw"]);
    assert.deepEqual(recording.mappings().map((m) => m.gpa), [0n]);
    // Detaching it fails the same way, and it stays attached.
    assert.throws(() => f.manager.removePartition(mapper), expected);
    refuse = false;
    a.unmap();
    assert.deepEqual(recording.mappings(), []);
  });

  await t.step("the alias offset shifts partition addresses", () => {
    using f = new RegionFixture(0x100000n);
    const alias = new RecordingPartition();
    f.manager.addPartition(new PartitionMapper(alias, f.va, 0x1000000n, false));
    f.manager.newRegion("a", r(0x2000, 0x3000), 255, true).map(RWX);
    assert.deepEqual(alias.mappings().map((m) => m.gpa), [0x1002000n]);
    assert.deepEqual(alias.mappings().map((m) => m.hostAddress), [f.va.base + 0x2000n]);
  });
});

Deno.test("region inspect, infos and disposal", async (t) => {
  await t.step("inspect has the reference layout", () => {
    using f = new RegionFixture(0x100000n);
    const ram = f.manager.newRegion("ram", r(0, 0x10000), 255, true);
    ram.addMapping(r(0x1000, 0x2000), f.backing, 0x5000n, true);
    ram.map(RWX);
    f.manager.newRegion("dev", r(0x20000, 0x30000), 0, false);
    assert.deepEqual(f.manager.inspect(), {
      "0x0-0x10000:ram": {
        map_params: { writable: true, executable: true, prefetch: false },
        is_active: true,
        priority: 255,
        mappings: { "0x1000-0x2000": { writable: true, file_offset: "0x5000" } },
      },
      "0x20000-0x30000:dev": {
        map_params: null,
        is_active: false,
        priority: 0,
        mappings: {},
      },
    });
  });

  await t.step("disposing of the manager unmaps everything", () => {
    using va = VaMapper.reserve(0x100000n);
    const partition = new RecordingPartition();
    const manager = new RegionManager(va);
    manager.addPartition(new PartitionMapper(partition, va, 0n, false));
    const a = manager.newRegion("a", r(0, 0x1000), 255, true);
    a.map(RWX);
    manager[Symbol.dispose]();
    manager[Symbol.dispose]();
    assert.deepEqual(partition.mappings(), []);
    assert.equal(a.isRemoved, true);
    assert.throws(() => manager.newRegion("b", r(0, 0x1000), 0, false), {
      message: "region manager has been disposed",
    });
  });

  await t.step("empty regions never overlap and never reach partitions", () => {
    using f = new RegionFixture(0x100000n);
    const ram = f.manager.newRegion("ram", r(0, 0x10000), 255, true);
    const empty = f.manager.newRegion("empty", new MemoryRange(0x10000n, 0x10000n), 255, true);
    ram.map(RWX);
    empty.map(RWX);
    assert.equal(empty.isActive, false);
    empty[Symbol.dispose]();
    assert.deepEqual(f.partitionMap(), ["0x0-0x10000 rw"]);
  });
});

Deno.test("addMapping refuses a backing that cannot hold the mapping", async (t) => {
  const { RegionManager } = await import("../regions/_region_manager.ts");
  const { RegionError } = await import("../regions/region_error.ts");
  const { VaMapper } = await import("../mapping/_va_mapper.ts");
  const { OwnedFd } = await import("../ffi/_owned_fd.ts");
  const { MemoryRange } = await import("../layout/memory_range.ts");
  using va = VaMapper.reserve(0x100000n);
  using manager = new RegionManager(va);
  using backing = OwnedFd.memfd("short", 0);
  backing.truncate(0x2000n);
  using region = manager.newRegion("rom", new MemoryRange(0x10000n, 0x20000n), 0, false);
  region.map({ writable: false, executable: true, prefetch: false });

  await t.step("a mapping past the end of the file", () => {
    assert.throws(
      () => region.addMapping(new MemoryRange(0n, 0x3000n), backing, 0n, false),
      (e: unknown) =>
        e instanceof RegionError && e.kind === "mappingPastBackingEnd" &&
        e.message ===
          "mapping 0x0-0x3000 of memory region rom needs 0x3000 bytes of its backing, which holds 0x2000",
    );
    assert.throws(
      () => region.addMapping(new MemoryRange(0n, 0x1000n), backing, 0x2000n, false),
      (e: unknown) => e instanceof RegionError && e.kind === "mappingPastBackingEnd",
    );
  });

  await t.step("an unaligned file offset", () => {
    assert.throws(
      () => region.addMapping(new MemoryRange(0n, 0x1000n), backing, 0x800n, false),
      (e: unknown) =>
        e instanceof RegionError && e.kind === "mappingUnalignedOffset" &&
        e.message ===
          "mapping 0x0-0x1000 of memory region rom has file offset 0x800, which is not 4 KiB aligned",
    );
  });

  await t.step("nothing was mapped, and a fitting mapping still works", () => {
    assert.deepEqual(va.entries(), []);
    region.addMapping(new MemoryRange(0n, 0x2000n), backing, 0n, false);
    assert.deepEqual(va.entries().map((e) => `${e.range}`), ["0x10000-0x12000"]);
  });

  await t.step("device memory checks at map time too", () => {
    const { control, region: device } = newDeviceMemoryMapper(manager).newRegion(0x10000n, "fb");
    using _control = control;
    assert.throws(
      () => device.map(0n, backing, 0n, 0x4000n, true),
      (e: unknown) =>
        e instanceof RegionError && e.kind === "mappingPastBackingEnd" &&
        e.message ===
          "mapping 0x0-0x4000 of memory region fb needs 0x4000 bytes of its backing, which holds 0x2000",
    );
  });
});

Deno.test("callbacks cannot start another region operation", async (t) => {
  using va = VaMapper.reserve(0x100000n);
  using manager = new RegionManager(va);
  const warnings: Warning[] = [];
  const previous = setWarningHandler((w) => warnings.push(w));
  try {
    using outer = manager.newRegion("outer", new MemoryRange(0x10000n, 0x20000n), 1, true);
    using inner = manager.newRegion("inner", new MemoryRange(0x10000n, 0x11000n), 0, true);
    const isReentrant = (e: unknown) =>
      e instanceof RegionError && e.kind === "reentrant" &&
      e.message ===
        "region manager operations cannot nest: a partition or DMA target called back into the region manager";

    await t.step("a partition that unmaps a region from mapRange", () => {
      const recording = new RecordingPartition();
      const meddling: Partition = {
        mapRange: (host, size, gpa, w, x) => {
          recording.mapRange(host, size, gpa, w, x);
          inner.unmap();
        },
        unmapRange: (gpa, size) => recording.unmapRange(gpa, size),
      };
      const mapper = new PartitionMapper(meddling, va, 0n, false);
      manager.addPartition(mapper);
      const params = { writable: true, executable: true, prefetch: false };
      assert.throws(() => outer.map(params), (e) => {
        assert.ok(e instanceof RegionError && e.kind === "partitionMap");
        assert.ok(isReentrant((e.cause as Error).cause), String(e.cause));
        return true;
      });
      assert.equal(warnings.length, 0);
      assert.equal(outer.isActive, false);
      manager.removePartition(mapper);
      outer.map(params);
      assert.equal(outer.isActive, true);
    });

    await t.step("a DMA target that adds a region from mapDma", async () => {
      warnings.length = 0;
      const { OwnedFd } = await import("../ffi/_owned_fd.ts");
      using backing = OwnedFd.memfd("dma", 0);
      backing.truncate(0x1000n);
      using _target = manager.addDmaTarget({
        mapDma: () => {
          manager.newRegion("sneaky", new MemoryRange(0x30000n, 0x31000n), 0, false);
        },
        unmapDma: () => {},
      }, false);
      outer.addMapping(new MemoryRange(0n, 0x1000n), backing, 0n, true);
      assert.equal(warnings.length, 1);
      assert.ok(isReentrant(warnings[0].cause), String(warnings[0].cause));
      assert.equal(manager.regionInfos().some((r) => r.name === "sneaky"), false);
      assert.deepEqual(va.entries().map((e) => `${e.range}`), ["0x10000-0x11000"]);
    });
  } finally {
    setWarningHandler(previous);
  }
});
