import assert from "node:assert/strict";
import { GuestMemoryBuilder } from "../builder.ts";
import { Mman } from "../ffi/_constants.ts";
import { HostMapping } from "../ffi/_host_mapping.ts";
import { MemoryLayout } from "../layout/memory_layout.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { Vtl } from "../manager/vtl.ts";
import type { VaMapper } from "../mapping/_va_mapper.ts";
import { GuestProbe } from "../testing/guest_probe.ts";
import { KvmPartition } from "../kvm/kvm_partition.ts";
import { RamVisibility } from "../regions/ram_visibility_control.ts";
import { openFdCount, skipWithoutKvm } from "./support/requirements.ts";
import { managerInternals } from "../manager/guest_memory_manager.ts";
import { shrinkSealedMemfd } from "./support/region_fixture.ts";

const MiB = 1n << 20n;
const RAM_SIZE = 16n * MiB;
const GAP = new MemoryRange(0xf000_0000n, 0x1_0000_0000n);
const VGA = new MemoryRange(0xa0000n, 0xc0000n);
const BIOS = new MemoryRange(0xf0000n, 0x100000n);

/** The byte at `gpa` as the host reservation holds it (through the VaMapper entry). */
function entryByte(va: VaMapper, gpa: bigint): number {
  const entry = va.entries().find((e) => e.range.containsAddr(gpa));
  assert.ok(entry !== undefined, `no VA entry at 0x${gpa.toString(16)}`);
  return entry.bytes[Number(gpa - entry.range.start)];
}

function entryU32(va: VaMapper, gpa: bigint): number {
  let value = 0;
  for (let i = 3n; i >= 0n; i--) value = value * 256 + entryByte(va, gpa + i);
  return value;
}

Deno.test({
  name: "KVM guest through a real manager: RAM, read-only RAM, gaps and device memory",
  ignore: skipWithoutKvm(),
  fn: async (t) => {
    const fdsBefore = openFdCount();
    const layout = MemoryLayout.fromGaps(RAM_SIZE, [GAP]);
    const manager = new GuestMemoryBuilder().x86LegacySupport(true).build(layout);
    const partition = KvmPartition.create();
    const attachment = manager.attachPartition(Vtl.Vtl0, partition);
    const probe = GuestProbe.create(partition); // code page at 0xfffff000, inside the gap
    const memory = manager.client().guestMemory();
    const visibility = manager.ramVisibilityControl();

    await t.step("every RAM region is a slot", () => {
      const ram = partition.slots().filter((s) => s.gpa < RAM_SIZE);
      assert.equal(ram.length, managerInternals(manager).ramRegions.length);
      assert.ok(ram.length > 10, `${ram.length} RAM slots`); // the low 1 MiB is split
      assert.equal(ram.reduce((n, s) => n + s.size, 0n), RAM_SIZE);
      assert.ok(ram.every((s) => !s.readonly));
    });

    await t.step("guest stores to RAM read back through the VA entry bytes", () => {
      for (
        const [gpa, size, value] of [[0x200000n, 4, 0xcafef00d], [0x7fffn, 2, 0xbeef], [
          RAM_SIZE - 1n,
          1,
          0x5a,
        ]] as const
      ) {
        assert.deepEqual(probe.store(gpa, size, value), { kind: "done" });
        let seen = 0;
        for (let i = BigInt(size) - 1n; i >= 0n; i--) {
          seen = seen * 256 + entryByte(managerInternals(manager).va, gpa + i);
        }
        assert.equal(seen, value);
      }
      assert.equal(memory.readU32(0x200000n), 0xcafef00d);
    });

    await t.step("host writes are what the guest loads", () => {
      memory.writeU32(0x300000n, 0x12345678);
      assert.deepEqual(probe.load(0x300000n, 4), { kind: "value", value: 0x12345678 });
      assert.deepEqual(probe.load(0x300001n, 2), { kind: "value", value: 0x3456 });
    });

    await t.step("read-only RAM: guest stores exit as MMIO and memory is unchanged", () => {
      memory.writeU32(BIOS.start + 0x100n, 0x11223344);
      visibility.setRamVisibility(BIOS, RamVisibility.ReadOnly);
      assert.equal(partition.slotAt(BIOS.start)?.readonly, true);
      assert.deepEqual(probe.store(BIOS.start + 0x100n, 4, 0xdeadbeef), {
        kind: "mmio",
        gpa: BIOS.start + 0x100n,
        isWrite: true,
        size: 4,
        data: new Uint8Array([0xef, 0xbe, 0xad, 0xde]),
      });
      assert.equal(entryU32(managerInternals(manager).va, BIOS.start + 0x100n), 0x11223344);
      assert.deepEqual(probe.load(BIOS.start + 0x100n, 4), { kind: "value", value: 0x11223344 });
      visibility.setRamVisibility(BIOS, RamVisibility.ReadWrite);
      assert.deepEqual(probe.store(BIOS.start + 0x100n, 4, 0xdeadbeef), { kind: "done" });
      assert.equal(entryU32(managerInternals(manager).va, BIOS.start + 0x100n), 0xdeadbeef);
    });

    await t.step("unmapped ranges give MMIO exits on loads", () => {
      for (const gpa of [RAM_SIZE, GAP.start, 0xfee00000n]) {
        assert.deepEqual(probe.load(gpa, 4), {
          kind: "mmio",
          gpa,
          isWrite: false,
          size: 4,
          data: new Uint8Array(0),
        });
      }
      visibility.setRamVisibility(VGA, RamVisibility.Unmapped);
      assert.equal(probe.load(VGA.start + 0x10n, 4).kind, "mmio");
      assert.equal(partition.slotAt(VGA.start), undefined);
      visibility.setRamVisibility(VGA, RamVisibility.ReadWrite);
      assert.equal(probe.load(VGA.start + 0x10n, 4).kind, "value");
    });

    await t.step("device memory shows through where RAM above it is unmapped", () => {
      using vram = shrinkSealedMemfd("vram", VGA.len);
      using view = HostMapping.shared(vram.fd, 0n, VGA.len, Mman.PROT_READ | Mman.PROT_WRITE);
      view.bytes().set([0xd1, 0xd2, 0xd3, 0xd4], 0x10);
      memory.writeU32(VGA.start + 0x10n, 0x0a0b0c0d);

      const { control, region } = manager.deviceMemoryMapper().newRegion(VGA.len, "vga");
      try {
        region.map(0n, vram, 0n, 0x10000n, true);
        region.map(0x10000n, vram, 0x10000n, 0x10000n, true);
        control.mapToGuest(VGA.start, true);
        // RAM (priority 255) hides the device region.
        assert.deepEqual(probe.load(VGA.start + 0x10n, 4), { kind: "value", value: 0x0a0b0c0d });

        visibility.setRamVisibility(VGA, RamVisibility.Unmapped);
        assert.deepEqual(probe.load(VGA.start + 0x10n, 4), { kind: "value", value: 0xd4d3d2d1 });
        assert.deepEqual(probe.store(VGA.start + 0x20n, 2, 0x7788), { kind: "done" });
        assert.deepEqual([...view.bytes().subarray(0x20, 0x22)], [0x88, 0x77]);

        visibility.setRamVisibility(VGA, RamVisibility.ReadWrite);
        assert.deepEqual(probe.load(VGA.start + 0x10n, 4), { kind: "value", value: 0x0a0b0c0d });
        assert.equal(memory.readU16(VGA.start + 0x20n), 0);

        // A hole in the device's mappings is a memory fault, not MMIO.
        visibility.setRamVisibility(VGA, RamVisibility.Unmapped);
        region.unmap(0x10000n, 0x10000n);
        assert.equal(probe.load(VGA.start + 0x10010n, 4).kind, "memory_fault");
        assert.deepEqual(probe.load(VGA.start + 0x10n, 4), { kind: "value", value: 0xd4d3d2d1 });
      } finally {
        control[Symbol.dispose]();
      }
      assert.equal(probe.load(VGA.start + 0x10n, 4).kind, "mmio");
      visibility.setRamVisibility(VGA, RamVisibility.ReadWrite);
      assert.deepEqual(probe.load(VGA.start + 0x10n, 4), { kind: "value", value: 0x0a0b0c0d });
    });

    await t.step("detaching removes every RAM slot; dispose leaks no fd", () => {
      attachment[Symbol.dispose]();
      assert.deepEqual(partition.slots().map((s) => s.gpa), [probe.codeGpa]);
      assert.equal(probe.load(0x200000n, 4).kind, "mmio");
      probe[Symbol.dispose]();
      partition[Symbol.dispose]();
      manager[Symbol.dispose]();
      assert.equal(openFdCount(), fdsBefore);
    });
  },
});

Deno.test({
  name: "KVM guest through a real manager: the VTL0 alias map at VTL2",
  ignore: skipWithoutKvm(),
  fn: () => {
    const offset = 0x4000_0000n; // 1 GiB: the alias stays below 4 GiB
    // A small layout, so that the alias offset clears the end of the layout.
    const layout = MemoryLayout.fromGaps(RAM_SIZE, [new MemoryRange(RAM_SIZE, 2n * RAM_SIZE)]);
    using manager = new GuestMemoryBuilder().vtl0AliasMap(offset).build(layout);
    using partition = KvmPartition.create();
    using attachment = manager.attachPartition(Vtl.Vtl2, partition);
    using probe = GuestProbe.create(partition);
    assert.ok(attachment.isAttached);
    assert.deepEqual(
      partition.slots().map((s) => [s.gpa, s.size]),
      [[0n, RAM_SIZE], [offset, RAM_SIZE], [probe.codeGpa, 0x1000n]],
    );
    assert.deepEqual(probe.store(0x1000n, 4, 0x600dcafe), { kind: "done" });
    assert.deepEqual(probe.load(offset + 0x1000n, 4), { kind: "value", value: 0x600dcafe });
    assert.deepEqual(probe.store(offset + RAM_SIZE - 2n, 2, 0xabcd), { kind: "done" });
    assert.deepEqual(probe.load(RAM_SIZE - 2n, 2), { kind: "value", value: 0xabcd });
    assert.equal(manager.client().guestMemory().readU32(0x1000n), 0x600dcafe);
    assert.equal(probe.load(offset + RAM_SIZE, 4).kind, "mmio");

    // A VTL0 partition of the same manager has no alias.
    using vtl0 = KvmPartition.create();
    using vtl0Attachment = manager.attachPartition(Vtl.Vtl0, vtl0);
    assert.ok(vtl0Attachment.isAttached);
    assert.deepEqual(vtl0.slots().map((s) => s.gpa), [0n]);
  },
});
