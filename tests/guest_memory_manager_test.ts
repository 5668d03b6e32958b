import assert from "node:assert/strict";
import { GuestMemoryBuilder } from "../builder.ts";
import { GuestMemory } from "../guest_memory/guest_memory.ts";
import { GuestMemoryError, type GuestMemoryErrorKind } from "../guest_memory/guest_memory_error.ts";
import { MemoryLayout } from "../layout/memory_layout.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { RamVisibility } from "../regions/ram_visibility_control.ts";
import { largeMappingCount, openFdCount } from "./support/requirements.ts";
import { managerInternals } from "../manager/guest_memory_manager.ts";
import { shrinkSealedMemfd } from "./support/region_fixture.ts";

const MiB = 1n << 20n;
const VGA = new MemoryRange(0xa0000n, 0xc0000n);

function assertGuestError(
  fn: () => unknown,
  kind: GuestMemoryErrorKind,
  gpa: bigint,
  message: string,
): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof GuestMemoryError, `expected a GuestMemoryError, got ${err}`);
    assert.equal(err.kind, kind);
    assert.equal(err.gpa, gpa);
    assert.equal(err.message, message);
    return true;
  });
}

function pattern(length: number, salt: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 31 + salt) & 0xff);
}

Deno.test("GuestMemoryManager.client().guestMemory()", async (t) => {
  await t.step("is one accessor over one reservation however often it is asked for", () => {
    using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(16n * MiB, []));
    const memory = manager.client().guestMemory();
    assert.ok(memory instanceof GuestMemory);
    // A second reservation would be another mapping at least as large as the
    // first; the JS heap's own small mappings come and go, so count only those.
    const reservations = () => largeMappingCount(managerInternals(manager).va.size);
    const before = reservations();
    assert.ok(before >= 1);
    for (let i = 0; i < 10; i++) {
      assert.equal(manager.client().guestMemory(), memory);
    }
    assert.equal(reservations(), before);
    assert.equal(memory.size, 16n * MiB);
  });

  await t.step("reads and writes RAM around an MMIO gap", () => {
    const gap = new MemoryRange(0xe0000000n, 0x100000000n);
    using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(4n << 30n, [gap]));
    const memory = manager.client().guestMemory();
    assert.equal(memory.size, 0x120000000n);
    memory.writeU64(0xdffffff8n, 0x1122334455667788n);
    assert.equal(memory.readU64(0xdffffff8), 0x1122334455667788n);
    const dest = new Uint8Array(16).fill(0xee);
    assertGuestError(
      () => memory.read(0xdffffff8n, dest),
      "unmapped",
      0xe0000000n,
      "guest address 0xe0000000 is not mapped",
    );
    assert.ok(dest.every((b) => b === 0xee));
    assertGuestError(
      () => memory.writeU32(0xf0000000n, 1),
      "unmapped",
      0xf0000000n,
      "guest address 0xf0000000 is not mapped",
    );
    // The last RAM bytes end exactly at the end of the reservation.
    memory.write(0x11ffffff0n, pattern(16, 1));
    assert.deepEqual(memory.readBytes(0x11ffffff0n, 16), pattern(16, 1));
    assertGuestError(
      () => memory.readBytes(0x11ffffff0n, 17),
      "outOfRange",
      0x120000000n,
      "guest address 0x120000000 is outside guest memory 0x0-0x120000000",
    );
  });
});

Deno.test("GuestMemory across RAM visibility changes", async (t) => {
  using manager = new GuestMemoryBuilder()
    .x86LegacySupport(true)
    .build(MemoryLayout.fromGaps(16n * MiB, []));
  const memory = manager.client().guestMemory();
  const control = manager.ramVisibilityControl();
  const vgaBytes = pattern(0x20000, 7);

  await t.step("reads and writes span adjacent RAM regions", () => {
    // 0x9f000-0xc1000 crosses three regions: low RAM, the VGA window, the first PAM piece.
    const src = pattern(0x22000, 3);
    memory.write(0x9f000n, src);
    assert.deepEqual(memory.readBytes(0x9f000, src.length), src);
    memory.writeU64(0x9fffc, 0xa0a1a2a3b0b1b2b3n);
    assert.equal(memory.readU64(0x9fffcn), 0xa0a1a2a3b0b1b2b3n);
    memory.write(0xa0000, vgaBytes);
  });

  await t.step("unmapped: every access to the region fails", () => {
    control.setRamVisibility(VGA, RamVisibility.Unmapped);
    assertGuestError(
      () => memory.readU8(0xa0000n),
      "unmapped",
      0xa0000n,
      "guest address 0xa0000 is not mapped",
    );
    assertGuestError(
      () => memory.writeU32(0xbfffc, 0),
      "unmapped",
      0xbfffcn,
      "guest address 0xbfffc is not mapped",
    );
    const dest = new Uint8Array(0x40).fill(0xee);
    assertGuestError(
      () => memory.read(0x9ffe0, dest),
      "unmapped",
      0xa0000n,
      "guest address 0xa0000 is not mapped",
    );
    assert.ok(dest.every((b) => b === 0xee));
    assert.ok(!memory.isMapped(VGA.start, VGA.len));
    // Its neighbours are untouched.
    assert.ok(memory.isMapped(0n, 0xa0000n, true));
    assert.ok(memory.isMapped(0xc0000n, 0x4000n, true));
  });

  await t.step("read-only: reads work, writes fail", () => {
    control.setRamVisibility(VGA, RamVisibility.ReadOnly);
    assert.deepEqual(memory.readBytes(0xa0000, 0x20000), vgaBytes);
    assertGuestError(
      () => memory.writeU8(0xa1234, 0),
      "readOnly",
      0xa1234n,
      "guest address 0xa1234 is mapped read-only",
    );
    assertGuestError(
      () => memory.write(0x9fff0, new Uint8Array(0x20)),
      "readOnly",
      0xa0000n,
      "guest address 0xa0000 is mapped read-only",
    );
    assertGuestError(
      () => memory.compareExchange64(0xa0000n, 0n, 1n),
      "readOnly",
      0xa0000n,
      "guest address 0xa0000 is mapped read-only",
    );
    assert.deepEqual(memory.readBytes(0x9f000, 0xff0), pattern(0x22000, 3).subarray(0, 0xff0));
  });

  await t.step("mapped again: the old contents are still there", () => {
    control.setRamVisibility(VGA, RamVisibility.ReadWrite);
    assert.deepEqual(memory.readBytes(0xa0000, 0x20000), vgaBytes);
    memory.writeU32(0xa0000, 0xfeedface);
    assert.equal(memory.readU32(0xa0000n), 0xfeedface);
  });

  await t.step("device memory under a hidden RAM region shows through", () => {
    using vram = shrinkSealedMemfd("vram", 0x20000n);
    const device = manager.deviceMemoryMapper().newRegion(0x20000n, "vga");
    device.region.map(0n, vram, 0n, 0x20000n, true);
    device.control.mapToGuest(VGA.start, true);
    // RAM still wins while it is mapped.
    assert.equal(memory.readU32(0xa0000), 0xfeedface);
    control.setRamVisibility(VGA, RamVisibility.Unmapped);
    assert.equal(memory.readU32(0xa0000), 0);
    memory.writeU32(0xa0000, 0x0badf00d);
    control.setRamVisibility(VGA, RamVisibility.ReadWrite);
    assert.equal(memory.readU32(0xa0000), 0xfeedface);
    control.setRamVisibility(VGA, RamVisibility.Unmapped);
    assert.equal(memory.readU32(0xa0000), 0x0badf00d);
    device.control.unmapFromGuest();
    assertGuestError(
      () => memory.readU32(0xa0000),
      "unmapped",
      0xa0000n,
      "guest address 0xa0000 is not mapped",
    );
    control.setRamVisibility(VGA, RamVisibility.ReadWrite);
    assert.equal(memory.readU32(0xa0000), 0xfeedface);
  });
});

Deno.test("GuestMemory in private memory mode", async (t) => {
  const ram = new MemoryRange(0n, 16n * MiB);
  using manager = new GuestMemoryBuilder()
    .privateMemory(true)
    .build(MemoryLayout.fromGaps(16n * MiB, []));
  const memory = manager.client().guestMemory();

  await t.step("private RAM is readable and writable", () => {
    memory.write(0x1000, pattern(0x3000, 9));
    assert.deepEqual(memory.readBytes(0x1000n, 0x3000n), pattern(0x3000, 9));
  });

  await t.step("private RAM stays accessible to the host whatever the guest sees", () => {
    manager.ramVisibilityControl().setRamVisibility(ram, RamVisibility.Unmapped);
    assert.deepEqual(memory.readBytes(0x1000n, 0x3000n), pattern(0x3000, 9));
    memory.writeU8(0x1000, 0x42);
    manager.ramVisibilityControl().setRamVisibility(ram, RamVisibility.ReadWrite);
    assert.equal(memory.readU8(0x1000), 0x42);
  });
});

Deno.test("GuestMemory through an existing backing", async (t) => {
  const layout = MemoryLayout.fromGaps(
    64n * MiB,
    [new MemoryRange(0x2000000n, 0x3000000n)],
  );
  using first = new GuestMemoryBuilder().build(layout);
  const a = first.client().guestMemory();
  a.write(0x1ffff00n, pattern(0x100, 5)); // the last RAM bytes before the gap
  a.write(0x3000000n, pattern(0x100, 6)); // the first after it
  using backing = first.sharedMemoryBacking();
  assert.ok(backing !== undefined);
  using second = new GuestMemoryBuilder().existingBacking(backing).build(layout);
  const b = second.client().guestMemory();

  await t.step("the second manager sees what the first wrote", () => {
    assert.deepEqual(b.readBytes(0x1ffff00n, 0x100), pattern(0x100, 5));
    assert.deepEqual(b.readBytes(0x3000000n, 0x100), pattern(0x100, 6));
    assertGuestError(
      () => b.readBytes(0x1ffff00n, 0x200),
      "unmapped",
      0x2000000n,
      "guest address 0x2000000 is not mapped",
    );
  });

  await t.step("the first manager sees what the second writes", () => {
    b.writeU64(0x4000n, 0x0102030405060708n);
    assert.equal(a.readU64(0x4000n), 0x0102030405060708n);
    assert.equal(b.compareExchange32(0x4000, 0x05060708, 0xaabbccdd), 0x05060708);
    assert.equal(a.readU32(0x4000), 0xaabbccdd);
  });

  await t.step("the contents outlive the first manager, whose accessor reports disposed", () => {
    first[Symbol.dispose]();
    assertGuestError(
      () => a.readU8(0x4000),
      "disposed",
      0x4000n,
      "guest address 0x4000 is not accessible: the guest memory manager has been disposed",
    );
    assert.equal(b.readU64(0x4000n), 0x01020304aabbccddn);
  });
});

Deno.test("GuestMemory after its manager is disposed", () => {
  const fds = openFdCount();
  const reservations = largeMappingCount(16n * MiB);
  let memory: GuestMemory;
  {
    using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(16n * MiB, []));
    memory = manager.client().guestMemory();
    memory.writeU8(0x1000, 1);
  }
  assertGuestError(
    () => memory.readU8(0x1000),
    "disposed",
    0x1000n,
    "guest address 0x1000 is not accessible: the guest memory manager has been disposed",
  );
  assertGuestError(
    () => memory.write(0, new Uint8Array(1)),
    "disposed",
    0n,
    "guest address 0x0 is not accessible: the guest memory manager has been disposed",
  );
  assert.equal(openFdCount(), fds);
  assert.equal(largeMappingCount(16n * MiB), reservations);
});
