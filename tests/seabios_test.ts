import assert from "node:assert/strict";
import { RamVisibility } from "../mod.ts";
import { type PcEvent, PcMachine } from "../pc/pc_machine.ts";
import {
  buildMarkerRom,
  MARKER_TARGET_OFFSET,
  MARKER_TARGET_VALUE,
  MarkerRomLine,
} from "../pc/option_rom.ts";
import {
  largeMappingCount,
  mapsLinesContaining,
  openFdCount,
  SEABIOS_DIR,
  skipWithoutSeabios,
} from "./support/requirements.ts";

const BANNER = "SeaBIOS (version 1.16.2-debian-1.16.2-1)";
const ALL_PIECES = [
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
];

/** What each image does differently: the PAM6 value it locks with, and so the pieces it leaves writable. */
const IMAGES = [
  { file: "bios.bin", size: 0x20000, lockPam6: 0x31, writableAfterLock: ["0xec000-0xf0000"] },
  {
    file: "bios-256k.bin",
    size: 0x40000,
    lockPam6: 0x33,
    writableAfterLock: ["0xe8000-0xec000", "0xec000-0xf0000"],
  },
];

function pamWrites(events: readonly PcEvent[], boot: number) {
  return events.flatMap((e) => e.kind === "pam" && e.boot === boot ? [e] : []);
}

function debugLines(events: readonly PcEvent[], boot: number): string[] {
  return events.flatMap((e) => e.kind === "debug" && e.boot === boot ? [e.text] : []);
}

for (const image of IMAGES) {
  Deno.test({
    name: `seabios: ${image.file} boots, shadows itself with PAM, runs our option ROM, reboots`,
    ignore: skipWithoutSeabios(),
    fn() {
      const bios = Deno.readFileSync(`${SEABIOS_DIR}/${image.file}`);
      assert.equal(bios.length, image.size);
      const optionRom = buildMarkerRom();
      const fdsBefore = openFdCount();
      const reservationsBefore = largeMappingCount(1n << 30n);
      let slotsAtEnd = -1;
      {
        using machine = PcMachine.create({
          bios,
          optionRoms: [{ name: "marker.rom", image: optionRom }],
        });
        const memory = machine.manager.client().guestMemory();

        // Boot 1, up to the option ROM's verdict on its write after the lock.
        const first = machine.run((e) =>
          e.kind === "debug" && (e.text === MarkerRomLine.dropped || e.text === MarkerRomLine.stuck)
        );
        assert.equal(first.reason, "until");
        assert.ok(first.milliseconds < 30_000, `boot took ${first.milliseconds} ms`);
        const lines = debugLines(machine.events, 1);
        assert.equal(lines[0], BANNER);
        assert.ok(lines.includes(MarkerRomLine.init));
        assert.ok(lines.includes(MarkerRomLine.boot));
        assert.equal(lines.at(-1), MarkerRomLine.dropped);
        assert.ok(!lines.includes(MarkerRomLine.stuck));
        assert.ok(lines.includes("Running option rom at c000:0003"));

        // The PAM sequence: unlock (dwords at 0x58 and 0x5c), then lock.
        const writes = pamWrites(machine.events, 1);
        assert.deepEqual(writes.map((w) => [w.offset, w.width, w.value]), [
          [0x58, 4, 0x33333000],
          [0x5c, 4, 0x33333333],
          [0x58, 4, 0x11111000],
          [0x5c, 4, (image.lockPam6 << 24 | 0x111111) >>> 0],
        ]);
        const opened = [...writes[0].changes, ...writes[1].changes];
        assert.deepEqual(opened.map((c) => `${c.range}`).sort(), [...ALL_PIECES].sort());
        assert.ok(opened.every((c) => c.visibility === RamVisibility.ReadWrite));
        const locked = [...writes[2].changes, ...writes[3].changes];
        assert.ok(locked.every((c) => c.visibility === RamVisibility.ReadOnly));
        assert.deepEqual(
          machine.pam.state().map((s) => `${s.range} ${s.visibility}`),
          ALL_PIECES.map((p) =>
            `${p} ${image.writableAfterLock.includes(p) ? "read-write" : "read-only"}`
          ),
        );
        // The markers in order: init while unlocked, boot entry and verdict after the lock.
        const order = machine.events.filter((e) => e.kind === "pam" || e.kind === "debug");
        const at = (pred: (e: PcEvent) => boolean) => order.findIndex(pred);
        const lockAt = at((e) => e === writes[3]);
        assert.ok(at((e) => e.kind === "debug" && e.text === MarkerRomLine.init) < lockAt);
        assert.ok(at((e) => e.kind === "debug" && e.text === MarkerRomLine.boot) > lockAt);

        // The write was dropped: it exited as MMIO, and memory is unchanged.
        const dropped = machine.events.filter((e) => e.kind === "droppedWrite");
        assert.deepEqual(
          dropped.map((e) => e.kind === "droppedWrite" ? [e.gpa, [...e.data]] : []),
          [[0xc0000n + BigInt(MARKER_TARGET_OFFSET), [0x5a]]],
        );
        assert.equal(memory.readU8(0xc0000 + MARKER_TARGET_OFFSET), MARKER_TARGET_VALUE);
        const shadow = new Uint8Array(optionRom.length);
        memory.read(0xc0000, shadow);
        assert.deepEqual(shadow, optionRom);

        // Boot 2: SeaBIOS gives up on booting and resets through 0xcf9.
        const second = machine.run((e) => e.kind === "debug" && e.boot === 2);
        assert.equal(second.reason, "until");
        assert.ok(second.milliseconds < 30_000, `reboot took ${second.milliseconds} ms`);
        const before = debugLines(machine.events, 1);
        assert.ok(before.includes("No bootable device.  Retrying in 0 seconds."));
        assert.ok(before.includes("Attempting a hard reboot"));
        const reset = machine.events.find((e) => e.kind === "reset");
        assert.ok(reset !== undefined && reset.kind === "reset");
        assert.equal(reset.how, "0xcf9");
        assert.equal(reset.boot, 2);
        assert.deepEqual(reset.changes.map((c) => `${c.range}`), ALL_PIECES);
        assert.ok(reset.changes.every((c) => c.visibility === RamVisibility.Unmapped));
        // The banner comes first, with PAM closed: it ran from ROM.
        assert.deepEqual(debugLines(machine.events, 2), [BANNER]);
        assert.deepEqual(pamWrites(machine.events, 2), []);
        assert.ok(machine.pam.state().every((s) => s.visibility === RamVisibility.Unmapped));
        const low = new Uint8Array(0x10000);
        memory.read(0xf0000, low);
        assert.deepEqual(low, bios.subarray(bios.length - 0x10000));

        assert.ok(machine.partition.slots().length > 0);
        assert.ok(mapsLinesContaining("/memfd:bios") > 0);
        assert.ok(mapsLinesContaining("/memfd:guest-ram") > 0);
        machine[Symbol.dispose]();
        slotsAtEnd = machine.partition.slots().length;
      }
      assert.equal(slotsAtEnd, 0);
      assert.equal(openFdCount(), fdsBefore);
      assert.equal(largeMappingCount(1n << 30n), reservationsBefore);
      assert.equal(mapsLinesContaining("/memfd:bios"), 0);
      assert.equal(mapsLinesContaining("/memfd:guest-ram"), 0);
    },
  });
}
