import assert from "node:assert/strict";
import { ChunkedSortedList } from "../collections/_chunked_sorted_list.ts";
import { RecordingPartition } from "../testing/recording_partition.ts";

const describe = (p: RecordingPartition) =>
  p.mappings().map((m) => `${m.gpa.toString(16)}+${m.size.toString(16)} ${m.writable ? "w" : "-"}`);

Deno.test("recording partition", async (t) => {
  await t.step("records its map and an event log", () => {
    const p = new RecordingPartition();
    p.mapRange(0x7000n, 0x1000n, 0x3000n, true, true);
    p.mapRange(0x5000n, 0x2000n, 0x0n, false, true);
    p.prefetchRange(0x0n, 0x2000n);
    p.pinRange(0x0n, 0x2000n);
    assert.deepEqual(describe(p), ["0+2000 -", "3000+1000 w"]);
    assert.equal(p.mappingAt(0x1fffn)?.hostAddress, 0x5000n);
    assert.equal(p.mappingAt(0x2000n), undefined);
    assert.deepEqual(p.events.map((e) => `${e.kind} ${e.gpa.toString(16)}`), [
      "map 3000",
      "map 0",
      "prefetch 0",
      "pin 0",
    ]);
    p.unmapRange(0x0n, 0x10000n);
    assert.deepEqual(describe(p), []);
    assert.equal(p.events.at(-1)?.kind, "unmap");
    p.clearEvents();
    assert.deepEqual(p.events, []);
  });

  await t.step("overlapping maps and cutting unmaps are refused like KVM slots", () => {
    const p = new RecordingPartition();
    p.mapRange(0n, 0x2000n, 0x2000n, true, true);
    assert.throws(() => p.mapRange(0n, 0x2000n, 0x3000n, true, true), {
      name: "RangeError",
      message: "range 0x3000-0x5000 overlaps the mapped range at 0x2000",
    });
    assert.throws(() => p.unmapRange(0x3000n, 0x1000n), {
      name: "RangeError",
      message: "mapped range at 0x2000 is only partly inside 0x3000-0x4000",
    });
    assert.deepEqual(describe(p), ["2000+2000 w"]);
    assert.equal(p.events.length, 1);
  });

  await t.step("without recording, the map is kept and the log stays empty", () => {
    const p = new RecordingPartition({ recordEvents: false });
    p.mapRange(0n, 0x1000n, 0n, true, false);
    assert.deepEqual(describe(p), ["0+1000 w"]);
    assert.equal(p.mappings()[0].executable, false);
    assert.deepEqual(p.events, []);
  });
});

Deno.test("chunked sorted list keeps order across many chunks", () => {
  const list = new ChunkedSortedList<number>();
  const reference: number[] = [];
  let seed = 12345;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  for (let i = 0; i < 3000; i++) {
    const value = Math.floor(random() * 1000);
    if (random() < 0.65) {
      list.insertAt(list.firstWhere((x) => x >= value), value);
      reference.push(value);
    } else {
      const cursor = list.firstWhere((x) => x >= value);
      const found = list.at(cursor);
      list.removeAt(cursor);
      if (found !== undefined) reference.splice(reference.indexOf(found), 1);
      else assert.ok(reference.every((x) => x < value));
    }
  }
  reference.sort((a, b) => a - b);
  assert.deepEqual(list.toArray(), reference);
  assert.equal(list.length, reference.length);
  assert.ok(list.length > 300, "enough items to span several chunks");
  // Walking with next() visits everything in order.
  const walked: number[] = [];
  for (let c = list.firstWhere(() => true); list.at(c) !== undefined; c = list.next(c)) {
    walked.push(list.at(c)!);
  }
  assert.deepEqual(walked, reference);
});
