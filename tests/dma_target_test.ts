import assert from "node:assert/strict";
import { setWarningHandler, type Warning } from "../diagnostics/warnings.ts";
import type { RegionHandle } from "../regions/_region_handle.ts";
import { r, RecordingDmaTarget, RegionFixture, RWX, RX } from "./support/region_fixture.ts";
import { newDmaMapperClient } from "../regions/dma_mapper_client.ts";

/** The reference setup: region 0x0-0x10000 at priority 0, DMA target, optionally mapped. */
function setup(f: RegionFixture, mapped: boolean, withMappings: boolean): RegionHandle {
  const region = f.manager.newRegion("test", r(0, 0x10000), 0, true);
  if (mapped) region.map(RWX);
  if (withMappings) {
    region.addMapping(r(0x0, 0x4000), f.backing, 0n, true);
    region.addMapping(r(0x8000, 0xc000), f.backing, 0x8000n, true);
  }
  return region;
}

Deno.test("dma targets (reference cases)", async (t) => {
  await t.step("registration replays active mappings", () => {
    using f = new RegionFixture();
    setup(f, true, true);
    const target = new RecordingDmaTarget();
    using _handle = f.manager.addDmaTarget(target, false);
    assert.deepEqual(target.events, ["map 0x0-0x4000", "map 0x8000-0xc000"]);
    assert.deepEqual(target.hostAddresses, [undefined, undefined]);
  });

  await t.step("live add and remove of mappings", () => {
    using f = new RegionFixture();
    const region = setup(f, true, false);
    const target = new RecordingDmaTarget();
    using _handle = f.manager.addDmaTarget(target, false);
    assert.deepEqual(target.take(), []);
    region.addMapping(r(0x0, 0x4000), f.backing, 0n, true);
    assert.deepEqual(target.take(), ["map 0x0-0x4000"]);
    region.removeMappings(r(0x0, 0x4000));
    assert.deepEqual(target.take(), ["unmap 0x0-0x4000"]);
  });

  await t.step("disabling the region unmaps its whole range", () => {
    using f = new RegionFixture();
    const region = setup(f, true, true);
    const target = new RecordingDmaTarget();
    using _handle = f.manager.addDmaTarget(target, false);
    target.take();
    region.unmap();
    assert.deepEqual(target.take(), ["unmap 0x0-0x10000"]);
  });

  await t.step("removing the target unmaps every active mapping", () => {
    using f = new RegionFixture();
    setup(f, true, true);
    const target = new RecordingDmaTarget();
    const handle = f.manager.addDmaTarget(target, false);
    target.take();
    handle[Symbol.dispose]();
    assert.deepEqual(target.take(), ["unmap 0x0-0x4000", "unmap 0x8000-0xc000"]);
    handle[Symbol.dispose]();
    assert.deepEqual(target.take(), []);
  });

  await t.step("inactive regions send nothing", () => {
    using f = new RegionFixture();
    const region = setup(f, false, true);
    const target = new RecordingDmaTarget();
    using _handle = f.manager.addDmaTarget(target, false);
    assert.deepEqual(target.take(), []);
    region.addMapping(r(0xc000, 0x10000), f.backing, 0n, true);
    assert.deepEqual(target.take(), []);
    region.removeMappings(r(0x0, 0x10000));
    assert.deepEqual(target.take(), []);
  });
});

Deno.test("dma targets", async (t) => {
  await t.step("host addresses, file offsets and writability when asked", () => {
    using f = new RegionFixture();
    const region = setup(f, false, true);
    region.map(RX);
    const target = new RecordingDmaTarget();
    using _handle = newDmaMapperClient(f.manager).addDmaTarget(target, true);
    assert.deepEqual(target.hostAddresses, [f.va.base, f.va.base + 0x8000n]);
    assert.deepEqual(
      target.details.map((d) => [d.fileOffset, d.writable, d.fd === f.backing.fd]),
      [[0n, false, true], [0x8000n, false, true]],
    );
  });

  await t.step("non-DMA regions are never sent", () => {
    using f = new RegionFixture();
    const target = new RecordingDmaTarget();
    using _handle = f.manager.addDmaTarget(target, false);
    const dev = f.manager.newRegion("dev", r(0, 0x10000), 0, false);
    dev.addMapping(r(0, 0x1000), f.backing, 0n, true);
    dev.map(RWX);
    dev.unmap();
    assert.deepEqual(target.take(), []);
  });

  await t.step("a region hidden by a higher one is unmapped from targets", () => {
    using f = new RegionFixture();
    const low = setup(f, true, true);
    const target = new RecordingDmaTarget();
    using _handle = f.manager.addDmaTarget(target, false);
    target.take();
    const high = f.manager.newRegion("high", r(0, 0x10000), 1, true);
    high.addMapping(r(0, 0x10000), f.backing, 0n, true);
    high.map(RWX);
    assert.deepEqual(target.take(), ["unmap 0x0-0x10000", "map 0x0-0x10000"]);
    high[Symbol.dispose]();
    assert.deepEqual(target.take(), ["unmap 0x0-0x10000", "map 0x0-0x4000", "map 0x8000-0xc000"]);
    assert.equal(low.isActive, true);
  });

  await t.step("target errors are warnings, never fatal", () => {
    using f = new RegionFixture();
    const region = setup(f, true, true);
    const warnings: Warning[] = [];
    const previous = setWarningHandler((w) => warnings.push(w));
    try {
      using _handle = f.manager.addDmaTarget({
        mapDma: () => {
          throw new Error("iommu full");
        },
        unmapDma: () => {
          throw new Error("iommu gone");
        },
      }, false);
      region.unmap();
      assert.equal(region.isActive, false);
    } finally {
      setWarningHandler(previous);
    }
    assert.deepEqual(warnings.map((w) => `${w.message}: ${(w.cause as Error).message}`), [
      "dma target failed to map 0x0-0x4000: iommu full",
      "dma target failed to map 0x8000-0xc000: iommu full",
      "dma target failed to unmap 0x0-0x10000: iommu gone",
    ]);
  });
});
