/**
 * The sorted range list (region maps, mappings, KVM slots) against a model:
 * random inserts, removals and look-ups over enough items to make many
 * chunks, near the places looked at last (the list answers a repeated
 * search from its last answer, which must be right whatever changed since).
 * The seed is printed; MEMBACKING_RANGE_LIST_SEED=<n> replays a run.
 *
 * @module
 */

import assert from "node:assert/strict";
import { RangeListError, SortedRangeList } from "../collections/_sorted_range_list.ts";
import { seededRandom } from "./support/seeded_random.ts";

interface Item {
  readonly start: bigint;
  readonly end: bigint;
}

const KEYS = { start: (i: Item) => i.start, end: (i: Item) => i.end };

Deno.test("sorted range list against a model of random changes", () => {
  const random = seededRandom("MEMBACKING_RANGE_LIST_SEED", "sorted range list");
  const { below, chance } = random;
  const list = new SortedRangeList<Item>(KEYS);
  let model: Item[] = []; // sorted, disjoint
  let recent = 0n; // where the last operation looked
  // An address near the last one most of the time, so that searches repeat.
  const address = () => {
    if (chance(60)) {
      return recent + BigInt(below(64)) - 32n < 0n ? 0n : recent + BigInt(below(64)) - 32n;
    }
    return BigInt(below(40_000));
  };
  // (An empty range overlaps nothing.)
  const overlapping = (start: bigint, end: bigint) =>
    start >= end ? [] : model.filter((i) => i.start < end && i.end > start);

  for (let step = 0; step < 20_000; step++) {
    const context = `step ${step}, seed ${random.seed}`;
    const op = below(100);
    const start = address();
    recent = start;
    if (op < 45) {
      const item = { start, end: start + 1n + BigInt(below(chance(80) ? 4 : 40)) };
      const inWay = overlapping(item.start, item.end);
      if (inWay.length > 0) {
        assert.throws(
          () => list.insert(item),
          (e: unknown) =>
            e instanceof RangeListError && e.kind === "overlap" && e.existing === inWay[0],
          context,
        );
      } else {
        list.insert(item);
        model.push(item);
        model.sort((a, b) => (a.start < b.start ? -1 : 1));
      }
    } else if (op < 65) {
      const end = start + 1n + BigInt(below(30));
      const found = overlapping(start, end);
      const partial = found.find((i) => i.start < start || i.end > end);
      if (partial !== undefined) {
        assert.throws(
          () => list.removeWithin(start, end),
          (e: unknown) =>
            e instanceof RangeListError && e.kind === "partialRemoval" && e.existing === partial,
          context,
        );
      } else {
        assert.deepEqual(list.removeWithin(start, end), found, context);
        model = model.filter((i) => !found.includes(i));
      }
    } else if (op < 75 && model.length > 0) {
      const item = chance(50)
        ? model[below(model.length)]
        : model.find((i) => i.end > start) ?? model[0];
      list.remove(item);
      model = model.filter((i) => i !== item);
      recent = item.start;
    } else if (op < 90) {
      const hit = model.find((i) => i.start <= start && start < i.end);
      assert.equal(list.find(start), hit, `${context}: find(${start})`);
    } else {
      const end = start + BigInt(below(50));
      assert.deepEqual(list.overlapping(start, end), overlapping(start, end), context);
      assert.equal(list.firstOverlapping(start, end), overlapping(start, end)[0], context);
    }
    assert.equal(list.length, model.length, context);
    if (step % 500 === 0) assert.deepEqual(list.toArray(), model, context);
  }
  assert.ok(model.length > 200, `only ${model.length} items: too few chunks to test`);
  assert.deepEqual(list.toArray(), model);
});
