import assert from "node:assert/strict";
import { MemoryRange } from "../layout/memory_range.ts";
import { RegionError } from "../regions/region_error.ts";
import { RamVisibility } from "../regions/ram_visibility_control.ts";
import { r, RegionFixture, RWX } from "./support/region_fixture.ts";
import { newRamVisibilityControl } from "../regions/ram_visibility_control.ts";

function setup(f: RegionFixture) {
  const ranges = [r(0, 0xa0000), r(0xa0000, 0xc0000), r(0xc0000, 0x100000)];
  const regions = ranges.map((range) => {
    const handle = f.manager.newRegion("ram", range, 255, true);
    handle.addMapping(new MemoryRange(0n, range.len), f.backing, range.start, true);
    handle.map(RWX);
    return { range, handle };
  });
  return { regions, control: newRamVisibilityControl(regions) };
}

Deno.test("ram visibility", async (t) => {
  await t.step("map params per visibility", () => {
    using f = new RegionFixture();
    const { regions, control } = setup(f);
    const vga = regions[1].handle;
    control.setRamVisibility(r(0xa0000, 0xc0000), RamVisibility.ReadOnly);
    assert.deepEqual(vga.mapParams, { writable: false, executable: true, prefetch: false });
    control.setRamVisibility(r(0xa0000, 0xc0000), RamVisibility.Unmapped);
    assert.equal(vga.mapParams, undefined);
    assert.equal(vga.isActive, false);
    control.setRamVisibility(r(0xa0000, 0xc0000), RamVisibility.ReadWrite);
    assert.deepEqual(vga.mapParams, { writable: true, executable: true, prefetch: false });
    assert.deepEqual(f.partitionMap(), [
      "0x0-0xa0000 rw",
      "0xa0000-0xc0000 rw",
      "0xc0000-0x100000 rw",
    ]);
  });

  await t.step("a range that is not one whole RAM region is refused", () => {
    using f = new RegionFixture();
    const { control } = setup(f);
    f.takePartitionEvents();
    for (const range of [r(0xa0000, 0xb0000), r(0, 0xc0000), r(0x100000, 0x101000), r(0, 0)]) {
      assert.throws(() => control.setRamVisibility(range, RamVisibility.Unmapped), (e: unknown) => {
        assert.ok(e instanceof RegionError);
        assert.equal(e.kind, "invalidRamRange");
        assert.equal(e.message, `${range} is not a controllable RAM range`);
        return true;
      });
    }
    assert.deepEqual(f.takePartitionEvents(), []);
  });

  await t.step("an unknown visibility is a TypeError", () => {
    using f = new RegionFixture();
    const { control } = setup(f);
    assert.throws(
      () => control.setRamVisibility(r(0, 0xa0000), "hidden" as RamVisibility),
      { name: "TypeError", message: "unknown RAM visibility hidden" },
    );
  });
});
