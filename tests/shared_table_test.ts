import assert from "node:assert/strict";
import { setWarningHandler, type Warning } from "../diagnostics/warnings.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { managerInternals } from "../manager/guest_memory_manager.ts";
import { SharedTableReader } from "../mapping/_shared_table.ts";
import { GuestMemoryBuilder, GuestMemoryClient, MemoryLayout, RamVisibility } from "../mod.ts";
import { protectionAt, vaProtections } from "./support/proc_maps.ts";

const PIECE = new MemoryRange(0xc0000n, 0xc4000n);

function build() {
  return new GuestMemoryBuilder().x86LegacySupport(true).build(
    MemoryLayout.fromGaps(2n << 20n, []),
  );
}

Deno.test("the grace period with a reader stuck inside an access", async (t) => {
  const warnings: Warning[] = [];
  const previous = setWarningHandler((w) => void warnings.push(w));
  try {
    const manager = build();
    const { va } = managerInternals(manager);
    const buffer = va.share();
    // A reader that announces an access and never finishes it (a Worker
    // terminated mid-access looks the same to the manager).
    const stuck = new SharedTableReader(buffer, "stuck reader");
    stuck.enter();

    await t.step("a change waits at most the bound, warns naming the reader, and goes on", () => {
      const started = performance.now();
      manager.ramVisibilityControl().setRamVisibility(PIECE, RamVisibility.Unmapped);
      const took = performance.now() - started;
      assert.ok(took >= 450 && took < 5000, `waited ${took} ms`);
      assert.equal(warnings.length, 1);
      assert.equal(
        warnings[0].message,
        'guest memory reader "stuck reader" (slot 0) has been inside one access for over 500 ms; ' +
          "memory it may touch is kept accessible to the host instead of being unmapped",
      );
      assert.deepEqual(va.graceStats, { periods: 1, waited: 1, stalled: 1 });
    });

    await t.step("memory taken away stays host-accessible while the reader is stalled", () => {
      const perms = vaProtections(va.base, va.size);
      assert.equal(protectionAt(perms, PIECE.start), "rw-p");
      assert.equal(manager.client().guestMemory().isMapped(PIECE.start, 4), false);
    });

    await t.step("later changes do not wait for the stalled reader again", () => {
      const started = performance.now();
      manager.ramVisibilityControl().setRamVisibility(PIECE, RamVisibility.ReadWrite);
      manager.ramVisibilityControl().setRamVisibility(PIECE, RamVisibility.Unmapped);
      assert.ok(performance.now() - started < 400);
      assert.equal(warnings.length, 1);
    });

    await t.step("once the reader moves on, memory taken away is PROT_NONE again", () => {
      stuck.exit();
      manager.ramVisibilityControl().setRamVisibility(PIECE, RamVisibility.ReadWrite);
      manager.ramVisibilityControl().setRamVisibility(PIECE, RamVisibility.Unmapped);
      assert.equal(protectionAt(vaProtections(va.base, va.size), PIECE.start), "---p");
      stuck.release();
    });

    await t.step("disposal with a stuck reader leaves the range accessible and warns", () => {
      const reader = new SharedTableReader(buffer, "stuck at dispose");
      reader.enter();
      const base = va.base;
      const size = va.size;
      manager[Symbol.dispose]();
      assert.equal(warnings.length, 3);
      assert.match(warnings[1].message, /"stuck at dispose"/);
      assert.equal(
        warnings[2].message,
        "guest memory reservation left mapped: a reader is still inside an access",
      );
      assert.ok(vaProtections(base, size).every((p) => p.perms === "rw-p"));
      reader.exit();
    });
  } finally {
    setWarningHandler(previous);
  }
});

Deno.test("a shared client's accessor", async (t) => {
  using manager = build();
  const share = manager.client().share();

  await t.step("survives a structured clone and sees the manager's changes", () => {
    const cloned = structuredClone(share);
    using memory = GuestMemoryClient.fromShare(cloned, { name: "clone" }).guestMemory();
    memory.writeU32(PIECE.start, 0x600d);
    assert.equal(manager.client().guestMemory().readU32(PIECE.start), 0x600d);
    manager.ramVisibilityControl().setRamVisibility(PIECE, RamVisibility.ReadOnly);
    assert.throws(() => memory.writeU32(PIECE.start, 1), {
      name: "GuestMemoryError",
      message: "guest address 0xc0000 is mapped read-only",
    });
    manager.ramVisibilityControl().setRamVisibility(PIECE, RamVisibility.Unmapped);
    assert.throws(() => memory.readU32(PIECE.start), {
      message: "guest address 0xc0000 is not mapped",
    });
    manager.ramVisibilityControl().setRamVisibility(PIECE, RamVisibility.ReadWrite);
    assert.equal(memory.readU32(PIECE.start), 0x600d);
  });

  await t.step("fails with disposed once disposed itself", () => {
    const memory = GuestMemoryClient.fromShare(share).guestMemory();
    memory[Symbol.dispose]();
    assert.throws(() => memory.readU8(0x1000), {
      message: "guest address 0x1000 is not accessible: the guest memory manager has been disposed",
    });
  });

  await t.step("refuses what is not a shared client", () => {
    assert.throws(() => GuestMemoryClient.fromShare({ kind: "other" }), {
      name: "TypeError",
      message: "not a shared guest memory client (from GuestMemoryClient.share())",
    });
  });

  await t.step("at most 64 readers at once, slots come back on dispose", () => {
    const memories = Array.from(
      { length: 64 },
      () => GuestMemoryClient.fromShare(share).guestMemory(),
    );
    assert.throws(() => GuestMemoryClient.fromShare(share).guestMemory(), {
      name: "RangeError",
      message: "all 64 guest memory reader slots are in use",
    });
    for (const m of memories) m[Symbol.dispose]();
    using again = GuestMemoryClient.fromShare(share).guestMemory();
    assert.equal(again.readU32(PIECE.start), 0x600d);
  });
});
