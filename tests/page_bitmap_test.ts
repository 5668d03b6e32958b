/**
 * The page bitmap (dirty pages, kept logs) against a model: random
 * sequences of additions and clears, each followed by every way of reading
 * it back (pages, runs, chunks, size, membership). The seed is printed;
 * MEMBACKING_BITMAP_SEED=<n> replays a run.
 *
 * @module
 */

import assert from "node:assert/strict";
import { PageBitmap, PAGES_PER_CHUNK } from "../collections/_page_bitmap.ts";
import { seededRandom } from "./support/seeded_random.ts";

/** Chunks 0-3 and one far away (page numbers above 2^32), for page picks. */
const ZONES = [0, PAGES_PER_CHUNK, 2 * PAGES_PER_CHUNK, 3 * PAGES_PER_CHUNK, 2 ** 33];

function sorted(model: Set<number>, from = 0, to = Number.MAX_SAFE_INTEGER): number[] {
  return [...model].filter((p) => p >= from && p < to).sort((a, b) => a - b);
}

/** The pages of (first, count) pairs, and whether neighbouring runs touch (they must not). */
function expand(runs: Float64Array, n: number): { pages: number[]; touching: boolean } {
  const pages: number[] = [];
  let touching = false;
  for (let k = 0; k < n; k++) {
    if (k > 0 && runs[2 * k - 2] + runs[2 * k - 1] === runs[2 * k]) touching = true;
    for (let i = 0; i < runs[2 * k + 1]; i++) pages.push(runs[2 * k] + i);
  }
  return { pages, touching };
}

Deno.test("page bitmap against a model of random additions", () => {
  const random = seededRandom("MEMBACKING_BITMAP_SEED", "page bitmap");
  const { below, chance } = random;
  // Near a chunk or word boundary half of the time.
  const page = () => {
    const zone = ZONES[below(ZONES.length)];
    if (chance(50)) return zone + below(PAGES_PER_CHUNK);
    const edge = zone + (chance(50) ? 0 : PAGES_PER_CHUNK);
    return Math.max(0, edge - 40 + below(80));
  };
  const bitmap = new PageBitmap();
  const model = new Set<number>();
  const add = (p: number) => model.add(p);

  for (let step = 0; step < 1500; step++) {
    const op = below(100);
    let what: string;
    if (op < 25) {
      const p = page();
      bitmap.set(p);
      add(p);
      what = `set(${p})`;
    } else if (op < 45) {
      const first = page();
      const count = 1 + below(chance(20) ? 200 : 40);
      bitmap.setRange(first, count);
      for (let i = 0; i < count; i++) add(first + i);
      what = `setRange(${first}, ${count})`;
    } else if (op < 65) {
      const aligned = chance(60);
      const p = page();
      const first = aligned ? p - (p % 32) : p;
      const words = new Uint32Array(1 + below(8));
      for (let i = 0; i < words.length; i++) {
        words[i] = chance(20) ? 0xffffffff : chance(50) ? 0 : (below(2 ** 32) & below(2 ** 32));
      }
      const pages = Math.max(1, 32 * words.length - below(40));
      bitmap.orWords(first, words, pages);
      for (let i = 0; i < Math.min(pages, 32 * words.length); i++) {
        if ((words[i >>> 5] >>> (i & 31)) & 1) add(first + i);
      }
      what = `orWords(${first}, [${words}], ${pages})`;
    } else if (op < 80) {
      const word = Math.floor(page() / 32);
      const bits = chance(20) ? -1 : chance(10) ? 0 : below(2 ** 32) | 0;
      bitmap.orWord(word, bits);
      for (let i = 0; i < 32; i++) if ((bits >>> i) & 1) add(word * 32 + i);
      what = `orWord(${word}, ${bits})`;
    } else if (op < 95) {
      const other = new PageBitmap();
      for (let i = below(20); i > 0; i--) {
        const p = page();
        other.set(p);
        add(p);
      }
      bitmap.orBitmap(other);
      what = "orBitmap";
    } else {
      bitmap.clear();
      model.clear();
      what = "clear()";
    }

    const context = `step ${step} (${what}), seed ${random.seed}`;
    assert.deepEqual(bitmap.pages(), sorted(model), context);
    assert.equal(bitmap.size, model.size, context);
    const probe = page();
    assert.equal(bitmap.has(probe), model.has(probe), `${context}: has(${probe})`);

    // Runs of a random range, into a list that may be too short.
    const from = chance(20) ? 0 : page();
    const to = chance(20) ? Number.MAX_SAFE_INTEGER : from + below(3 * PAGES_PER_CHUNK);
    const inRange = sorted(model, from, to);
    const room = below(6);
    const out = new Float64Array(2 * room).fill(-1);
    const n = bitmap.runsInto(from, to, out, 0);
    const full = new Float64Array(2 * n);
    assert.equal(bitmap.runsInto(from, to, full, 0), n, context);
    const runs = expand(full, n);
    assert.deepEqual(runs.pages, inRange, `${context}: runs of [${from}, ${to})`);
    assert.equal(runs.touching, false, `${context}: runs are maximal`);
    assert.deepEqual([...out.subarray(0, 2 * Math.min(room, n))], [
      ...full.subarray(0, 2 * Math.min(room, n)),
    ], `${context}: the pairs that fit are written`);
    if (room > n) assert.ok(out.subarray(2 * n).every((v) => v === -1), context);
    // Pairs from `at` on.
    const shifted = new Float64Array(2 * (n + 2));
    assert.equal(bitmap.runsInto(from, to, shifted, 2), n + 2, context);
    assert.deepEqual([...shifted.subarray(4)], [...full], context);
    assert.deepEqual(bitmap.pages(from, to), inRange, context);

    // Chunks give back every page.
    const fromChunks: number[] = [];
    bitmap.forEachChunk((firstPage, words, pages) => {
      assert.equal(words.length, pages / 32, context);
      for (let i = 0; i < pages; i++) {
        if ((words[i >>> 5] >>> (i & 31)) & 1) fromChunks.push(firstPage + i);
      }
    });
    assert.deepEqual(fromChunks, sorted(model), `${context}: chunks`);
  }
});

Deno.test("page bitmap: runs join across chunk boundaries and full words", () => {
  const bitmap = new PageBitmap();
  bitmap.setRange(PAGES_PER_CHUNK - 40, 100); // crosses into chunk 1, whole words inside
  bitmap.set(PAGES_PER_CHUNK + 60); // touches the run's end: joins it
  bitmap.set(5);
  const out = new Float64Array(8);
  assert.equal(bitmap.runsInto(0, Number.MAX_SAFE_INTEGER, out, 0), 2);
  assert.deepEqual([...out.subarray(0, 4)], [5, 1, PAGES_PER_CHUNK - 40, 101]);
  // A range that starts and ends inside words cuts the run.
  assert.equal(bitmap.runsInto(PAGES_PER_CHUNK - 3, PAGES_PER_CHUNK + 2, out, 0), 1);
  assert.deepEqual([...out.subarray(0, 2)], [PAGES_PER_CHUNK - 3, 5]);
  bitmap.clear();
  assert.equal(bitmap.runsInto(0, Number.MAX_SAFE_INTEGER, out, 0), 0);
  assert.equal(bitmap.size, 0);
  let chunks = 0;
  bitmap.forEachChunk(() => chunks++);
  assert.equal(chunks, 0);
});
