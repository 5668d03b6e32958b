import assert from "node:assert/strict";
import fc from "fast-check";
import { MemoryRange } from "../mod.ts";
import { MAX_ADDRESS, PAGE_SIZE, subtractRanges } from "../layout/memory_range.ts";

const r = (start: bigint, end: bigint) => new MemoryRange(start, end);

Deno.test("MemoryRange", async (t) => {
  await t.step("constants", () => {
    assert.equal(PAGE_SIZE, 4096n);
    assert.equal(MAX_ADDRESS, 0xffff_ffff_ffff_f000n);
  });

  await t.step("construction and display", () => {
    const range = r(0xa0000n, 0xc0000n);
    assert.equal(range.start, 0xa0000n);
    assert.equal(range.end, 0xc0000n);
    assert.equal(range.len, 0x20000n);
    assert.equal(`${range}`, "0xa0000-0xc0000");
    assert.equal(r(0n, 0x100000n).toString(), "0x0-0x100000");
    assert.equal(JSON.stringify({ range }), '{"range":"0xa0000-0xc0000"}');
    assert.equal(`${MemoryRange.EMPTY}`, "0x0-0x0");
    assert.equal(r(0n, MAX_ADDRESS).toString(), "0x0-0xfffffffffffff000");
    assert.equal(MemoryRange.fromLength(0x1000n, 0x2000n).toString(), "0x1000-0x3000");
  });

  await t.step("rejects unaligned, reversed, negative and too-high ends", () => {
    assert.throws(() => r(0x10n, 0x2000n), {
      name: "RangeError",
      message: "memory range start 0x10 is not 4 KiB aligned",
    });
    assert.throws(() => r(0n, 0x1001n), {
      name: "RangeError",
      message: "memory range end 0x1001 is not 4 KiB aligned",
    });
    assert.throws(() => r(0x2000n, 0x1000n), {
      name: "RangeError",
      message: "memory range start 0x2000 is after its end 0x1000",
    });
    assert.throws(() => r(-0x1000n, 0x1000n), RangeError);
    assert.throws(() => r(0n, 1n << 64n), {
      name: "RangeError",
      message:
        "memory range end 0x10000000000000000 is past the maximum address 0xfffffffffffff000",
    });
    assert.throws(() => MemoryRange.fromLength(0x1000n, 0x800n), RangeError);
    // deno-lint-ignore no-explicit-any
    assert.throws(() => new MemoryRange(0 as any, 4096 as any), TypeError);
  });

  await t.step("isEmpty, overlaps, contains, containsAddr", () => {
    assert.equal(r(0x1000n, 0x1000n).isEmpty(), true);
    assert.equal(r(0x1000n, 0x2000n).isEmpty(), false);

    assert.equal(r(0n, 0x2000n).overlaps(r(0x1000n, 0x3000n)), true);
    assert.equal(r(0n, 0x2000n).overlaps(r(0x2000n, 0x3000n)), false, "adjacent");
    assert.equal(r(0n, 0x2000n).overlaps(r(0x1000n, 0x1000n)), false, "empty never overlaps");

    assert.equal(r(0n, 0x4000n).contains(r(0x1000n, 0x2000n)), true);
    assert.equal(r(0n, 0x4000n).contains(r(0n, 0x4000n)), true);
    assert.equal(r(0n, 0x4000n).contains(r(0x3000n, 0x5000n)), false);
    assert.equal(r(0n, 0x4000n).contains(r(0x4000n, 0x4000n)), true, "empty at the end");
    assert.equal(r(0x1000n, 0x4000n).contains(r(0x1000n, 0x1000n)), true, "empty at the start");
    assert.equal(r(0x1000n, 0x4000n).contains(r(0x5000n, 0x5000n)), false, "empty outside");

    assert.equal(r(0x1000n, 0x2000n).containsAddr(0x1000n), true);
    assert.equal(r(0x1000n, 0x2000n).containsAddr(0x1fffn), true);
    assert.equal(r(0x1000n, 0x2000n).containsAddr(0x2000n), false);
    assert.equal(r(0x1000n, 0x2000n).containsAddr(0xfffn), false);
  });

  await t.step("offsetOf", () => {
    assert.equal(r(0x1000n, 0x3000n).offsetOf(0x2800n), 0x1800n);
    assert.throws(() => r(0x1000n, 0x3000n).offsetOf(0x3000n), {
      name: "RangeError",
      message: "address 0x3000 is not in 0x1000-0x3000",
    });
  });

  await t.step("intersection", () => {
    assert.equal(`${r(0n, 0x3000n).intersection(r(0x2000n, 0x5000n))}`, "0x2000-0x3000");
    assert.equal(`${r(0x2000n, 0x5000n).intersection(r(0n, 0x3000n))}`, "0x2000-0x3000");
    assert.equal(r(0n, 0x1000n).intersection(r(0x2000n, 0x3000n)).isEmpty(), true);
    assert.equal(r(0n, 0x1000n).intersection(r(0x1000n, 0x3000n)).isEmpty(), true);
  });

  await t.step("splitAtOffset", () => {
    const [low, high] = r(0x10000n, 0x20000n).splitAtOffset(0x4000n);
    assert.equal(`${low}`, "0x10000-0x14000");
    assert.equal(`${high}`, "0x14000-0x20000");
    const [none, all] = r(0x10000n, 0x20000n).splitAtOffset(0n);
    assert.equal(none.isEmpty(), true);
    assert.equal(`${all}`, "0x10000-0x20000");
    assert.equal(`${r(0x10000n, 0x20000n).splitAtOffset(0x10000n)[0]}`, "0x10000-0x20000");
    assert.throws(() => r(0x10000n, 0x20000n).splitAtOffset(0x800n), {
      name: "RangeError",
      message: "split offset 0x800 is not a page-aligned offset into 0x10000-0x20000",
    });
    assert.throws(() => r(0x10000n, 0x20000n).splitAtOffset(0x11000n), RangeError);
    assert.throws(() => r(0x10000n, 0x20000n).splitAtOffset(-0x1000n), RangeError);
  });

  await t.step("equals and compare order by start then end", () => {
    assert.equal(r(0n, 0x1000n).equals(r(0n, 0x1000n)), true);
    assert.equal(r(0n, 0x1000n).equals(r(0n, 0x2000n)), false);
    const ranges = [r(0x2000n, 0x3000n), r(0n, 0x2000n), r(0n, 0x1000n), r(0x1000n, 0x1000n)];
    ranges.sort((a, b) => a.compare(b));
    assert.deepEqual(ranges.map(String), [
      "0x0-0x1000",
      "0x0-0x2000",
      "0x1000-0x1000",
      "0x2000-0x3000",
    ]);
    assert.equal(r(0n, 0x1000n).compare(r(0n, 0x1000n)), 0);
  });
});

Deno.test("subtractRanges", async (t) => {
  await t.step("examples", () => {
    const gaps = [r(0x4000n, 0x8000n)];
    assert.deepEqual(subtractRanges([r(0n, 0x10000n)], gaps).map(String), [
      "0x0-0x4000",
      "0x8000-0x10000",
    ]);
    assert.deepEqual(
      subtractRanges(
        [r(0n, 0x10000n), r(0x20000n, 0x30000n)],
        [r(0x8000n, 0x24000n), r(0x28000n, 0x30000n)],
      ).map(String),
      ["0x0-0x8000", "0x24000-0x28000"],
    );
    assert.deepEqual(subtractRanges([r(0n, 0x10000n)], []).map(String), ["0x0-0x10000"]);
    assert.deepEqual(subtractRanges([], [r(0n, 0x10000n)]).map(String), []);
    assert.deepEqual(subtractRanges([r(0x1000n, 0x2000n)], [r(0n, 0x10000n)]).map(String), []);
    assert.deepEqual(
      subtractRanges([r(0n, 0x4000n)], [r(0n, 0x1000n), r(0x3000n, 0x4000n)]).map(String),
      ["0x1000-0x3000"],
    );
  });

  // Property: the result is exactly the set of pages in some range and in no gap.
  const pageSets = (maxPages: number) =>
    fc.uniqueArray(fc.integer({ min: 0, max: maxPages - 1 }), { maxLength: maxPages })
      .map((pages) => toRanges(new Set(pages)));

  function toRanges(pages: Set<number>): MemoryRange[] {
    const out: MemoryRange[] = [];
    const sortedPages = [...pages].sort((a, b) => a - b);
    let i = 0;
    while (i < sortedPages.length) {
      let j = i;
      while (j + 1 < sortedPages.length && sortedPages[j + 1] === sortedPages[j] + 1) j++;
      out.push(r(BigInt(sortedPages[i]) * PAGE_SIZE, BigInt(sortedPages[j] + 1) * PAGE_SIZE));
      i = j + 1;
    }
    return out;
  }

  function pagesOf(ranges: MemoryRange[]): Set<number> {
    const pages = new Set<number>();
    for (const range of ranges) {
      for (let a = range.start; a < range.end; a += PAGE_SIZE) pages.add(Number(a / PAGE_SIZE));
    }
    return pages;
  }

  await t.step("matches a page-set model", () => {
    fc.assert(
      fc.property(pageSets(64), pageSets(64), (ranges, gaps) => {
        const result = subtractRanges(ranges, gaps);
        const gapPages = pagesOf(gaps);
        const expected = new Set([...pagesOf(ranges)].filter((p) => !gapPages.has(p)));
        assert.deepEqual(pagesOf(result), expected);
        for (let i = 0; i < result.length; i++) {
          assert.equal(result[i].isEmpty(), false);
          if (i > 0) assert.ok(result[i - 1].end <= result[i].start, "sorted, disjoint");
        }
      }),
      { numRuns: 500 },
    );
  });

  await t.step("range predicates match a page-set model", () => {
    const range = fc.tuple(fc.integer({ min: 0, max: 32 }), fc.integer({ min: 0, max: 32 }))
      .map(([a, b]) => r(BigInt(Math.min(a, b)) * PAGE_SIZE, BigInt(Math.max(a, b)) * PAGE_SIZE));
    fc.assert(
      fc.property(range, range, (a, b) => {
        const pa = pagesOf([a]);
        const pb = pagesOf([b]);
        const common = [...pa].filter((p) => pb.has(p));
        assert.equal(a.overlaps(b), common.length > 0);
        assert.deepEqual(pagesOf([a.intersection(b)]), new Set(common));
        if (!b.isEmpty()) assert.equal(a.contains(b), [...pb].every((p) => pa.has(p)));
        assert.equal(a.compare(b) === 0, a.equals(b));
        assert.equal(Math.sign(a.compare(b)) + Math.sign(b.compare(a)), 0, "antisymmetric");
      }),
      { numRuns: 500 },
    );
  });
});
