import assert from "node:assert/strict";
import { GuestMemoryBuilder } from "../builder.ts";
import { MemoryLayout } from "../layout/memory_layout.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { Vtl } from "../manager/vtl.ts";
import { RecordingPartition } from "../testing/recording_partition.ts";
import { RamVisibility } from "../regions/ram_visibility_control.ts";
import type { RegionHandle } from "../regions/_region_handle.ts";
import { splitX86LegacyRam } from "../regions/_x86_legacy.ts";
import { protectionAt, vaProtections } from "./support/proc_maps.ts";
import { r, RegionFixture, RWX } from "./support/region_fixture.ts";
import { newRamVisibilityControl } from "../regions/ram_visibility_control.ts";
import { managerInternals } from "../manager/guest_memory_manager.ts";

const EXPECTED = [
  "0x0-0xa0000",
  "0xa0000-0xc0000",
  "0xc0000-0xc4000",
  "0xc4000-0xc8000",
  "0xc8000-0xcc000",
  "0xcc000-0xd0000",
  "0xd0000-0xd4000",
  "0xd4000-0xd8000",
  "0xd8000-0xdc000",
  "0xdc000-0xe0000",
  "0xe0000-0xe4000",
  "0xe4000-0xe8000",
  "0xe8000-0xec000",
  "0xec000-0xf0000",
  "0xf0000-0x100000",
  "0x100000-0x400000",
];

/** RAM regions as the builder makes them: priority 255, DMA, packed in the backing. */
function ramRegions(
  f: RegionFixture,
  ranges: MemoryRange[],
): { range: MemoryRange; handle: RegionHandle }[] {
  let offset = 0n;
  return ranges.map((range) => {
    const handle = f.manager.newRegion("ram", range, 255, true);
    handle.addMapping(new MemoryRange(0n, range.len), f.backing, offset, true);
    offset += range.len;
    handle.map(RWX);
    return { range, handle };
  });
}

Deno.test("x86 legacy RAM splitting", async (t) => {
  await t.step("the reference's pieces, exactly", () => {
    const pieces = splitX86LegacyRam(r(0, 0x400000));
    assert.deepEqual(pieces.map(String), EXPECTED);
    assert.equal(pieces.length, 16);
    // Consecutive, covering the input.
    for (let i = 1; i < pieces.length; i++) assert.equal(pieces[i].start, pieces[i - 1].end);
  });

  await t.step("RAM ending at exactly 1 MiB leaves an empty last piece", () => {
    const pieces = splitX86LegacyRam(r(0, 0x100000));
    assert.equal(pieces.length, 16);
    assert.equal(`${pieces[15]}`, "0x100000-0x100000");
    assert.equal(pieces[15].isEmpty(), true);
  });

  await t.step("RAM not starting at 0 or below 1 MiB is refused", () => {
    const message = "x86 support requires RAM to start at 0 and contain at least 1MB";
    assert.throws(() => splitX86LegacyRam(r(0x1000, 0x200000)), { name: "RangeError", message });
    assert.throws(() => splitX86LegacyRam(r(0, 0xff000)), { name: "RangeError", message });
  });

  await t.step("each PAM piece flips RW -> RO -> Unmapped -> RW on its own", () => {
    using f = new RegionFixture(0x400000n);
    const regions = ramRegions(f, splitX86LegacyRam(r(0, 0x400000)));
    const control = newRamVisibilityControl(regions);
    const initial = f.partitionMap();
    assert.deepEqual(initial, EXPECTED.map((range) => `${range} rw`));
    f.takePartitionEvents();
    for (const { range } of regions.slice(1, 15)) {
      const others = initial.filter((line) => !line.startsWith(`${range} `));
      const perms = () => protectionAt(vaProtections(f.va.base, f.va.size), range.start);

      control.setRamVisibility(range, RamVisibility.ReadOnly);
      assert.deepEqual(f.takePartitionEvents(), [`unmap ${range}`, `map ${range} ro`]);
      assert.deepEqual(f.partitionMap().filter((l) => !l.startsWith(`${range} `)), others);
      // The host mapping is left as it was; the table refuses host writes.
      assert.equal(perms(), "rw-s");
      assert.equal(f.va.entries().find((e) => e.range.equals(range))?.writable, false);

      control.setRamVisibility(range, RamVisibility.Unmapped);
      assert.deepEqual(f.takePartitionEvents(), [`unmap ${range}`]);
      assert.deepEqual(f.partitionMap(), others);
      assert.equal(perms(), "---p");

      control.setRamVisibility(range, RamVisibility.ReadWrite);
      assert.deepEqual(f.takePartitionEvents(), [`map ${range} rw`]);
      assert.deepEqual(f.partitionMap(), initial);
      assert.equal(perms(), "rw-s");
    }
  });

  await t.step("device memory shows through an unmapped VGA window", () => {
    using f = new RegionFixture(0x400000n);
    const regions = ramRegions(f, splitX86LegacyRam(r(0, 0x400000)));
    const control = newRamVisibilityControl(regions);
    const vga = f.manager.newRegion("vga", r(0xa0000, 0xc0000), 0, false);
    vga.map(RWX);
    assert.equal(vga.isActive, false);
    control.setRamVisibility(r(0xa0000, 0xc0000), RamVisibility.Unmapped);
    assert.equal(vga.isActive, true);
    control.setRamVisibility(r(0xa0000, 0xc0000), RamVisibility.ReadWrite);
    assert.equal(vga.isActive, false);
  });

  await t.step("through the builder: 16 RAM regions, PAM flips reach an attached partition", () => {
    using manager = new GuestMemoryBuilder().x86LegacySupport(true)
      .build(MemoryLayout.fromGaps(0x400000n, []));
    assert.deepEqual(
      managerInternals(manager).ramRegions.map((region) => `${region.range}`),
      EXPECTED,
    );
    const partition = new RecordingPartition();
    using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
    const lines = () =>
      partition.mappings().map((m) => `${MemoryRange.fromLength(m.gpa, m.size)} ${m.writable}`);
    assert.deepEqual(lines(), EXPECTED.map((range) => `${range} true`));
    const control = manager.ramVisibilityControl();
    const { control: vga } = manager.deviceMemoryMapper().newRegion(0x20000n, "vga");
    vga.mapToGuest(0xa0000n, true);
    control.setRamVisibility(r(0xf0000, 0x100000), RamVisibility.ReadOnly);
    control.setRamVisibility(r(0xa0000, 0xc0000), RamVisibility.Unmapped);
    assert.equal(vga.isActive, true);
    const expected = EXPECTED.map((range) => `${range} ${range !== "0xf0000-0x100000"}`);
    assert.deepEqual(lines(), expected);
    assert.throws(() => control.setRamVisibility(r(0xc0000, 0xc8000), RamVisibility.ReadOnly), {
      name: "RegionError",
      message: "0xc0000-0xc8000 is not a controllable RAM range",
    });
  });
});
