import assert from "node:assert/strict";
import {
  GuestMemoryBuilder,
  MemoryLayout,
  MemoryRange,
  RamVisibility,
  RegionError,
  SharedMemoryBacking,
  Vtl,
} from "../mod.ts";
import { KvmPartition } from "../kvm.ts";
import { GuestProbe, RecordingPartition } from "../testing.ts";
import { BiosRom, I440fxPam, PamMode, X86ChipsetError } from "../x86.ts";
import { openFdCount, skipWithoutKvm } from "./support/requirements.ts";

const LAYOUT = MemoryLayout.fromGaps(16n << 20n, [new MemoryRange(0xe0000000n, 0x100000000n)]);

function legacyManager() {
  return new GuestMemoryBuilder().x86LegacySupport(true).build(LAYOUT);
}

/** The partition's map below 1 MiB, as `start-end rw|ro`. */
function lowMap(partition: RecordingPartition): string[] {
  return partition.mappings().filter((m) => m.gpa < 0x100000n).map((m) =>
    `${new MemoryRange(m.gpa, m.end)} ${m.writable ? "rw" : "ro"}`
  );
}

Deno.test("i440fx pam: the 13 pieces, their registers and nibbles", () => {
  assert.deepEqual(I440fxPam.pieces.map(String), [
    "0xc0000-0xc4000",
    "0xc4000-0xc8000",
    "0xc8000-0xcc000",
    "0xcc000-0xd0000",
    "0xd0000-0xd4000",
    "0xd4000-0xd8000",
    "0xd8000-0xdc000",
    "0xdc000-0xe0000",
    "0xe0000-0xe4000",
    "0xe4000-0xe8000",
    "0xe8000-0xec000",
    "0xec000-0xf0000",
    "0xf0000-0x100000",
  ]);
});

Deno.test("i440fx pam: config writes of any width drive RAM visibility", () => {
  using manager = legacyManager();
  const partition = new RecordingPartition();
  using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
  const pam = I440fxPam.create(manager.ramVisibilityControl());
  assert.deepEqual(lowMap(partition), ["0x0-0xa0000 rw", "0xa0000-0xc0000 rw"]);
  assert.ok(pam.state().every((s) => s.mode === PamMode.Unmapped));

  // SeaBIOS's unlock: dwords at 0x58 (0x58 itself is not PAM) and 0x5c.
  const opened = [
    ...pam.configWrite(0x58, 4, 0x33333000 | 0x42),
    ...pam.configWrite(0x5c, 4, 0x33333333),
  ];
  assert.equal(opened.length, 13);
  assert.ok(opened.every((c) => c.mode === PamMode.ReadWrite && c.previousMode === 0));
  assert.deepEqual(opened[0], {
    register: 0x5a,
    range: new MemoryRange(0xc0000n, 0xc4000n),
    mode: PamMode.ReadWrite,
    visibility: RamVisibility.ReadWrite,
    previousMode: PamMode.Unmapped,
  });
  assert.equal(pam.configRead(0x58, 4), 0x33333000);
  assert.equal(pam.configRead(0x59, 1), 0x30);
  assert.equal(pam.configRead(0x5e, 2), 0x3333);
  assert.equal(lowMap(partition).length, 15);

  // SeaBIOS's lock: 0xc0000-0xc4000 read-only, the rest of 0xc0000-0xf0000 left as is, BIOS read-only.
  assert.deepEqual(
    pam.configWrite(0x58, 4, 0x33311000).map((c) => [`${c.range}`, c.mode, c.visibility]),
    [
      ["0xc0000-0xc4000", PamMode.ReadOnly, "read-only"],
      ["0xf0000-0x100000", PamMode.ReadOnly, "read-only"],
    ],
  );
  assert.deepEqual(pam.configWrite(0x5c, 4, 0x33333333), []); // nothing changed
  // A byte write, then a word write straddling 0x5e and 0x5f.
  assert.deepEqual(pam.configWrite(0x5b, 1, 0x02).map((c) => [`${c.range}`, c.visibility]), [
    ["0xc8000-0xcc000", "unmapped"], // mode 10: write RAM, read ROM, shown unmapped
    ["0xcc000-0xd0000", "unmapped"],
  ]);
  assert.deepEqual(pam.configWrite(0x5e, 2, 0x0131).map((c) => [`${c.range}`, c.mode]), [
    ["0xe0000-0xe4000", PamMode.ReadOnly],
    ["0xe8000-0xec000", PamMode.ReadOnly],
    ["0xec000-0xf0000", PamMode.Unmapped],
  ]);
  assert.deepEqual(
    pam.state().map((s) => `${s.range} ${s.mode} ${s.visibility}`),
    [
      "0xc0000-0xc4000 1 read-only",
      "0xc4000-0xc8000 3 read-write",
      "0xc8000-0xcc000 2 unmapped",
      "0xcc000-0xd0000 0 unmapped",
      "0xd0000-0xd4000 3 read-write",
      "0xd4000-0xd8000 3 read-write",
      "0xd8000-0xdc000 3 read-write",
      "0xdc000-0xe0000 3 read-write",
      "0xe0000-0xe4000 1 read-only",
      "0xe4000-0xe8000 3 read-write",
      "0xe8000-0xec000 1 read-only",
      "0xec000-0xf0000 0 unmapped",
      "0xf0000-0x100000 1 read-only",
    ],
  );
  assert.equal(pam.reset().length, 11);
  assert.deepEqual(lowMap(partition), ["0x0-0xa0000 rw", "0xa0000-0xc0000 rw"]);

  assert.throws(() => pam.configWrite(0xfe, 4, 0), (e: unknown) => {
    assert.ok(e instanceof X86ChipsetError);
    assert.equal(e.kind, "badConfigAccess");
    assert.equal(
      e.message,
      "config space access of 4 bytes at 254 is not 1, 2 or 4 bytes inside the 256-byte config space",
    );
    return true;
  });
  assert.throws(() => pam.configRead(0x59, 3), { name: "X86ChipsetError" });
});

Deno.test("bios rom: high and low maps, the alias split on PAM pieces", () => {
  using manager = legacyManager();
  const partition = new RecordingPartition();
  using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
  const image = new Uint8Array(0x40000);
  for (let i = 0; i < image.length; i += 0x1000) image[i] = i >> 12;
  const fdsBefore = openFdCount();
  {
    using rom = BiosRom.map(manager, image, { name: "test-bios" });
    assert.equal(`${rom.highRange}`, "0xfffc0000-0x100000000");
    assert.deepEqual(rom.lowRanges.map(String), [
      "0xe0000-0xe4000",
      "0xe4000-0xe8000",
      "0xe8000-0xec000",
      "0xec000-0xf0000",
      "0xf0000-0x100000",
    ]);
    const high = partition.mappingAt(0xfffc0000n);
    assert.equal(high?.size, 0x40000n);
    assert.equal(high?.writable, false);
    assert.equal(partition.mappingAt(0xe0000n)?.writable, true); // RAM on top for now

    const pam = I440fxPam.create(manager.ramVisibilityControl());
    // Power-on: the ROM shows through the Unmapped pieces; 0xc0000-0xe0000 has nothing.
    assert.deepEqual(lowMap(partition).slice(2), [
      "0xe0000-0xe4000 ro",
      "0xe4000-0xe8000 ro",
      "0xe8000-0xec000 ro",
      "0xec000-0xf0000 ro",
      "0xf0000-0x100000 ro",
    ]);
    const memory = manager.client().guestMemory();
    // The low alias is the last 128 KiB of the image: 0xe0000 is image offset 0x20000.
    assert.equal(memory.readU8(0xe0000), 0x20);
    assert.equal(memory.readU8(0xf0000), 0x30);
    assert.equal(memory.readU8(0xfffc0000), 0x00);
    pam.configWrite(0x59, 1, 0x30);
    assert.equal(memory.readU8(0xf0000), 0); // RAM now
    pam.configWrite(0x59, 1, 0x00);
    assert.equal(memory.readU8(0xf0000), 0x30);
  }
  assert.equal(openFdCount(), fdsBefore);
  assert.equal(partition.mappingAt(0xfffc0000n), undefined);
  assert.equal(partition.mappingAt(0xf0000n), undefined);

  assert.throws(() => BiosRom.map(manager, new Uint8Array(1000)), {
    name: "X86ChipsetError",
    message:
      "BIOS image of 1000 bytes is not a positive multiple of 4 KiB of at most 16777216 bytes",
  });
  using small = BiosRom.map(manager, new Uint8Array(0x10000));
  assert.deepEqual(small.lowRanges.map(String), ["0xf0000-0x100000"]);
});

Deno.test({
  name: "bios rom: the guest sees the ROM where PAM hides RAM, and cannot write it",
  ignore: skipWithoutKvm(),
  fn() {
    using manager = legacyManager();
    using partition = KvmPartition.create();
    using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
    const image = new Uint8Array(0x20000).fill(0xaa);
    image.set([0x11, 0x22, 0x33, 0x44], 0x10000); // at 0xf0000 and 0xfffe0000 + 0x10000
    using rom = BiosRom.map(manager, image);
    const pam = I440fxPam.create(manager.ramVisibilityControl());
    using probe = GuestProbe.create(partition, { codeGpa: 0xfe000000n });
    assert.deepEqual(probe.load(0xf0000n, 4), { kind: "value", value: 0x44332211 });
    assert.deepEqual(probe.load(0xffff0000n, 4), { kind: "value", value: 0x44332211 });
    const write = probe.store(0xf0000n, 4, 0x12345678);
    assert.equal(write.kind, "mmio");
    pam.configWrite(0x59, 1, 0x30);
    assert.deepEqual(probe.store(0xf0000n, 4, 0x12345678), { kind: "done" });
    pam.configWrite(0x59, 1, 0x10);
    assert.equal(probe.store(0xf0000n, 4, 0).kind, "mmio");
    assert.deepEqual(probe.load(0xf0000n, 4), { kind: "value", value: 0x12345678 });
    pam.configWrite(0x59, 1, 0x00);
    assert.deepEqual(probe.load(0xf0000n, 4), { kind: "value", value: 0x44332211 });
    assert.equal(rom.backing.read(0x10000n, 4)[0], 0x11);
  },
});

Deno.test("bios rom: an unsplit low alias is refused with both ranges and the nesting rule", () => {
  using manager = legacyManager();
  const { control, region } = manager.deviceMemoryMapper().newRegion(0x20000n, "bios-low");
  using rom = SharedMemoryBacking.create(0x20000n, { name: "bios" });
  region.map(0n, rom, 0n, 0x20000n, false);
  assert.throws(() => control.mapToGuest(0xe0000n, false), (e: unknown) => {
    assert.ok(e instanceof RegionError);
    assert.equal(e.kind, "overlap");
    assert.equal(
      e.message,
      "memory region bios-low overlaps with existing region ram: bios-low is 0xe0000-0x100000 " +
        "at priority 0, ram is 0xe0000-0xe4000 at priority 255; a region of lower priority must " +
        "lie inside the region it overlaps",
    );
    assert.deepEqual(e.detail, {
      kind: "overlap",
      newName: "bios-low",
      newRange: new MemoryRange(0xe0000n, 0x100000n),
      newPriority: 0,
      existingName: "ram",
      existingRange: new MemoryRange(0xe0000n, 0xe4000n),
      existingPriority: 255,
      rule: "lowerInside",
    });
    return true;
  });
});
