import assert from "node:assert/strict";
import fc from "fast-check";
import { MemoryLayout, MemoryLayoutError, MemoryRange } from "../mod.ts";
import { PAGE_SIZE } from "../layout/memory_range.ts";

const r = (start: bigint, end: bigint) => new MemoryRange(start, end);
const GiB = 1n << 30n;
const MiB = 1n << 20n;
const strs = (ranges: readonly MemoryRange[]) => ranges.map(String);

function expectError(fn: () => unknown, kind: MemoryLayoutError["kind"], message: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof MemoryLayoutError, `expected MemoryLayoutError, got ${err}`);
    assert.equal(err.kind, kind);
    assert.equal(err.message, message);
    assert.equal(err.name, "MemoryLayoutError");
    return true;
  });
}
const badSize = (fn: () => unknown) => expectError(fn, "badSize", "invalid memory size");
const badRanges = (fn: () => unknown) =>
  expectError(fn, "badRanges", "invalid memory or MMIO ranges");
const vtl2Below = (fn: () => unknown) =>
  expectError(fn, "vtl2BelowRam", "vtl2 range is below end of ram");

Deno.test("MemoryLayout.fromGaps", async (t) => {
  await t.step("spec example: 4 GiB around the 0xe0000000 gap", () => {
    const gap = r(0xe0000000n, 0x100000000n);
    const layout = MemoryLayout.fromGaps(4n * GiB, [gap]);
    assert.deepEqual(strs(layout.ram()), ["0x0-0xe0000000", "0x100000000-0x120000000"]);
    assert.equal(layout.ramSize(), 4n * GiB);
    assert.deepEqual(strs(layout.mmio()), ["0xe0000000-0x100000000"]);
    assert.deepEqual(layout.pciEcam(), []);
    assert.deepEqual(layout.pciMmio(), []);
    assert.equal(layout.vtl2Range(), undefined);
    assert.equal(layout.endOfRam(), 0x120000000n);
    assert.equal(layout.endOfLayout(), 0x120000000n);
  });

  await t.step("RAM that ends before a gap", () => {
    const layout = MemoryLayout.fromGaps(GiB, [r(0xe0000000n, 0x100000000n)]);
    assert.deepEqual(strs(layout.ram()), ["0x0-0x40000000"]);
    assert.equal(layout.endOfRam(), 0x40000000n);
    assert.equal(layout.endOfLayout(), 0x100000000n, "the MMIO gap ends highest");
  });

  await t.step("RAM that exactly fills the space below a gap", () => {
    const layout = MemoryLayout.fromGaps(0xe0000000n, [r(0xe0000000n, 0x100000000n)]);
    assert.deepEqual(strs(layout.ram()), ["0x0-0xe0000000"]);
  });

  await t.step("no gaps, a gap at 0, several gaps", () => {
    assert.deepEqual(strs(MemoryLayout.fromGaps(2n * MiB, []).ram()), ["0x0-0x200000"]);
    assert.equal(MemoryLayout.fromGaps(2n * MiB, []).endOfLayout(), 0x200000n);
    assert.deepEqual(
      strs(MemoryLayout.fromGaps(0x3000n, [r(0n, 0x1000n)]).ram()),
      ["0x1000-0x4000"],
    );
    const layout = MemoryLayout.fromGaps(0x5000n, [r(0x1000n, 0x2000n), r(0x3000n, 0x5000n)]);
    assert.deepEqual(strs(layout.ram()), ["0x0-0x1000", "0x2000-0x3000", "0x5000-0x8000"]);
    assert.equal(layout.ramSize(), 0x5000n);
  });

  await t.step("PCI gaps are skipped like MMIO gaps", () => {
    const layout = MemoryLayout.fromGaps(4n * GiB, [r(0xf0000000n, 0x100000000n)], {
      pciEcamGaps: [r(0xe0000000n, 0xf0000000n)],
      pciMmioGaps: [r(0x200000000n, 0x300000000n)],
    });
    assert.deepEqual(strs(layout.ram()), ["0x0-0xe0000000", "0x100000000-0x120000000"]);
    assert.deepEqual(strs(layout.pciEcam()), ["0xe0000000-0xf0000000"]);
    assert.deepEqual(strs(layout.pciMmio()), ["0x200000000-0x300000000"]);
    assert.deepEqual(strs(layout.mmio()), ["0xf0000000-0x100000000"]);
    assert.equal(layout.endOfLayout(), 0x300000000n);
    const split = MemoryLayout.fromGaps(0x4000n, [], { pciMmioGaps: [r(0x2000n, 0x3000n)] });
    assert.deepEqual(strs(split.ram()), ["0x0-0x2000", "0x3000-0x5000"]);
  });

  await t.step("VTL2 range above RAM", () => {
    const vtl2 = r(0x200000000n, 0x202000000n);
    const layout = MemoryLayout.fromGaps(4n * GiB, [r(0xe0000000n, 0x100000000n)], {
      vtl2Range: vtl2,
    });
    assert.equal(layout.vtl2Range(), vtl2);
    assert.equal(layout.ramSize(), 4n * GiB, "VTL2 is not RAM");
    assert.equal(layout.endOfLayout(), 0x120000000n, "VTL2 is not part of the layout end");
    const adjacent = MemoryLayout.fromGaps(2n * MiB, [], { vtl2Range: r(0x200000n, 0x400000n) });
    assert.equal(`${adjacent.vtl2Range()}`, "0x200000-0x400000");
  });

  await t.step("invalid memory size", () => {
    badSize(() => MemoryLayout.fromGaps(0n, []));
    badSize(() => MemoryLayout.fromGaps(0x1001n, []));
    badSize(() => MemoryLayout.fromGaps(0x800n, []));
    badSize(() => MemoryLayout.fromGaps(-0x1000n, []));
    badSize(() => MemoryLayout.fromGaps(1n << 64n, []));
    badSize(() => MemoryLayout.fromGaps(0x1000n, [r(0n, 0xffff_ffff_ffff_f000n)]));
  });

  await t.step("size is checked before the gaps", () => {
    badSize(() => MemoryLayout.fromGaps(0n, [r(0x2000n, 0x1000n + 0x1000n), r(0n, 0x1000n)]));
  });

  await t.step("invalid gap lists", () => {
    badRanges(() => MemoryLayout.fromGaps(GiB, [r(0x2000n, 0x3000n), r(0n, 0x1000n)]));
    badRanges(() => MemoryLayout.fromGaps(GiB, [r(0x1000n, 0x1000n)]));
    badRanges(() => MemoryLayout.fromGaps(GiB, [r(0n, 0x2000n), r(0x1000n, 0x3000n)]));
    badRanges(() => MemoryLayout.fromGaps(GiB, [r(0n, 0x2000n), r(0n, 0x2000n)]));
    badRanges(() =>
      MemoryLayout.fromGaps(GiB, [], { pciEcamGaps: [r(0x2000n, 0x3000n), r(0n, 0x1000n)] })
    );
    badRanges(() => MemoryLayout.fromGaps(GiB, [], { pciMmioGaps: [r(0x5000n, 0x5000n)] }));
  });

  await t.step("gaps from different lists must not overlap", () => {
    badRanges(() =>
      MemoryLayout.fromGaps(GiB, [r(0xe0000000n, 0x100000000n)], {
        pciEcamGaps: [r(0xf0000000n, 0xf8000000n)],
      })
    );
    badRanges(() =>
      MemoryLayout.fromGaps(GiB, [], {
        pciEcamGaps: [r(0x10000n, 0x20000n)],
        pciMmioGaps: [r(0x1f000n, 0x30000n)],
      })
    );
  });

  await t.step("VTL2 range must not overlap anything, nor start below the end of RAM", () => {
    const gap = r(0xe0000000n, 0x100000000n);
    badRanges(() => MemoryLayout.fromGaps(4n * GiB, [gap], { vtl2Range: r(0n, 0x200000n) }));
    badRanges(() =>
      MemoryLayout.fromGaps(4n * GiB, [gap], { vtl2Range: r(0xf0000000n, 0xf0200000n) })
    );
    badRanges(() => MemoryLayout.fromGaps(2n * MiB, [], { vtl2Range: r(0x400000n, 0x400000n) }));
    // fromGaps leaves no hole below the end of RAM (RAM fills all but the
    // gaps), so a VTL2 range below it always overlaps: the overlap error wins.
    badRanges(() =>
      MemoryLayout.fromGaps(0x2000n, [r(0x1000n, 0x2000n)], { vtl2Range: r(0x1000n, 0x2000n) })
    );
  });

  await t.step("the queried lists are frozen copies", () => {
    const gaps = [r(0xe0000000n, 0x100000000n)];
    const layout = MemoryLayout.fromGaps(4n * GiB, gaps);
    gaps.push(r(0x200000000n, 0x300000000n));
    assert.equal(layout.mmio().length, 1);
    assert.ok(Object.isFrozen(layout.ram()));
    assert.ok(Object.isFrozen(layout.mmio()));
    assert.deepEqual(JSON.parse(JSON.stringify(layout)), {
      ram: ["0x0-0xe0000000", "0x100000000-0x120000000"],
      mmio: ["0xe0000000-0x100000000"],
      pciEcam: [],
      pciMmio: [],
    });
  });
});

Deno.test("MemoryLayout.fromRanges", async (t) => {
  await t.step("explicit RAM ranges", () => {
    const layout = MemoryLayout.fromRanges(
      [r(0n, 0x80000000n), r(0x100000000n, 0x180000000n)],
      [r(0xe0000000n, 0x100000000n)],
      { vtl2Range: r(0x200000000n, 0x201000000n) },
    );
    assert.deepEqual(strs(layout.ram()), ["0x0-0x80000000", "0x100000000-0x180000000"]);
    assert.equal(layout.ramSize(), 4n * GiB);
    assert.equal(layout.endOfRam(), 0x180000000n);
    assert.equal(layout.endOfLayout(), 0x180000000n);
    assert.equal(`${layout.vtl2Range()}`, "0x200000000-0x201000000");
    const noGaps = MemoryLayout.fromRanges([r(0x100000n, 0x200000n)], []);
    assert.equal(noGaps.endOfLayout(), 0x200000n);
  });

  await t.step("no RAM is an invalid size", () => {
    badSize(() => MemoryLayout.fromRanges([], [r(0n, 0x1000n)]));
  });

  await t.step("RAM ranges follow the same rules as gaps", () => {
    badRanges(() => MemoryLayout.fromRanges([r(0x2000n, 0x3000n), r(0n, 0x1000n)], []));
    badRanges(() => MemoryLayout.fromRanges([r(0n, 0x1000n), r(0x1000n, 0x1000n)], []));
    badRanges(() => MemoryLayout.fromRanges([r(0n, 0x2000n), r(0x1000n, 0x3000n)], []));
  });

  await t.step("RAM must not overlap gaps", () => {
    badRanges(() => MemoryLayout.fromRanges([r(0n, 0x100000000n)], [r(0xe0000000n, 0x100000000n)]));
    badRanges(() =>
      MemoryLayout.fromRanges([r(0n, 0x10000n)], [], { pciEcamGaps: [r(0xf000n, 0x11000n)] })
    );
    badRanges(() =>
      MemoryLayout.fromRanges([r(0n, 0x10000n)], [], { pciMmioGaps: [r(0n, 0x1000n)] })
    );
  });

  await t.step("VTL2 range rules", () => {
    badRanges(() =>
      MemoryLayout.fromRanges([r(0n, 0x10000n)], [], { vtl2Range: r(0x8000n, 0x18000n) })
    );
    vtl2Below(() =>
      MemoryLayout.fromRanges([r(0n, 0x1000n), r(0x4000n, 0x5000n)], [], {
        vtl2Range: r(0x2000n, 0x3000n),
      })
    );
  });
});

Deno.test("MemoryLayout.fromGaps properties", () => {
  // Gaps: sorted, disjoint, non-empty page runs below 256 pages.
  const gapList = fc.uniqueArray(fc.integer({ min: 0, max: 255 }), { maxLength: 40 })
    .map((pages) => {
      const sortedPages = [...pages].sort((a, b) => a - b);
      const gaps: MemoryRange[] = [];
      let i = 0;
      while (i < sortedPages.length) {
        let j = i;
        while (j + 1 < sortedPages.length && sortedPages[j + 1] === sortedPages[j] + 1) j++;
        gaps.push(r(BigInt(sortedPages[i]) * PAGE_SIZE, BigInt(sortedPages[j] + 1) * PAGE_SIZE));
        i = j + 1;
      }
      return gaps;
    });
  fc.assert(
    fc.property(gapList, fc.integer({ min: 1, max: 400 }), (gaps, pages) => {
      const size = BigInt(pages) * PAGE_SIZE;
      const layout = MemoryLayout.fromGaps(size, gaps);
      const ram = layout.ram();
      assert.equal(layout.ramSize(), size);
      // RAM is sorted, disjoint, non-empty, avoids every gap ...
      for (let i = 0; i < ram.length; i++) {
        assert.equal(ram[i].isEmpty(), false);
        if (i > 0) assert.ok(ram[i - 1].end < ram[i].start, "separated by a gap");
        for (const gap of gaps) assert.equal(ram[i].overlaps(gap), false);
      }
      // ... and is packed as low as possible: every page below the end of RAM
      // is either RAM or a gap.
      for (let a = 0n; a < layout.endOfRam(); a += PAGE_SIZE) {
        const inRam = ram.some((x) => x.containsAddr(a));
        const inGap = gaps.some((x) => x.containsAddr(a));
        assert.ok(inRam !== inGap, `page 0x${a.toString(16)} is RAM xor gap`);
      }
    }),
    { numRuns: 300 },
  );
});
