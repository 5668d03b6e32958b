/**
 * The demo's first part: SeaBIOS boots on membacking (the PC machine in
 * `pc/`), when it is installed and KVM is there. Records the firmware's
 * output, every PAM write with what it changed, the region and slot tables
 * at the end of POST (after the PAM lock), our option ROM's verdict on its
 * write to read-only shadow RAM, and the warm reset to a second banner.
 *
 * @module
 */
import type { MemoryRange, RamVisibility } from "../mod.ts";
import { PcMachine } from "../pc/pc_machine.ts";
import {
  buildMarkerRom,
  MARKER_TARGET_OFFSET,
  MARKER_TARGET_VALUE,
  MarkerRomLine,
} from "../pc/option_rom.ts";
import { regionRows, slotRows, type Snapshot } from "./scenario.ts";

/** Where Debian's `seabios` package puts its 128 KiB image. */
export const DEFAULT_BIOS = "/usr/share/seabios/bios.bin";

/** One thing the firmware did, in order. */
export type FirmwareEvent =
  | { readonly kind: "line"; readonly boot: number; readonly text: string }
  | {
    readonly kind: "pam";
    readonly boot: number;
    readonly offset: number;
    readonly width: number;
    readonly value: number;
    readonly changes: readonly { readonly range: string; readonly visibility: RamVisibility }[];
  }
  | { readonly kind: "reset"; readonly boot: number; readonly how: string }
  | { readonly kind: "droppedWrite"; readonly boot: number; readonly gpa: bigint };

/** What the firmware part found. */
export type FirmwareReport =
  | {
    readonly status: "booted";
    readonly bios: string;
    readonly size: number;
    readonly events: readonly FirmwareEvent[];
    /** Regions and slots right after the last PAM write of POST (the lock). */
    readonly endOfPost: Snapshot | undefined;
    /** The option ROM's byte after its write: unchanged means the write was dropped. */
    readonly optionRomByte: number;
    readonly checks: readonly { readonly what: string; readonly ok: boolean }[];
    readonly milliseconds: number;
    readonly ok: boolean;
  }
  | { readonly status: "notInstalled"; readonly bios: string }
  | { readonly status: "skipped"; readonly reason: string };

/** What a slot at `range` is, for the end-of-POST table. */
function slotNote(machine: PcMachine, range: MemoryRange): string {
  if (range.equals(machine.rom.highRange)) return "BIOS image, below 4 GiB";
  const piece = machine.pam.state().find((s) => s.range.equals(range));
  if (piece === undefined) return "";
  return piece.visibility === "unmapped"
    ? "BIOS image, low alias (PAM closed)"
    : `shadow RAM (PAM ${piece.visibility})`;
}

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/**
 * Boots `bios` to its second banner (after "No bootable device" and a
 * reset through 0xcf9).
 *
 * @param bios Path of the image.
 * @param kvm Whether KVM may be used.
 * @returns The report; `notInstalled` when the image is missing.
 */
export function runFirmware(bios: string, kvm: boolean): FirmwareReport {
  if (!exists(bios)) return { status: "notInstalled", bios };
  if (!kvm) return { status: "skipped", reason: "--no-kvm: SeaBIOS needs a KVM guest" };
  const image = Deno.readFileSync(bios);
  const events: FirmwareEvent[] = [];
  let endOfPost: Snapshot | undefined;
  using stack = new DisposableStack();
  const machine: PcMachine = stack.use(PcMachine.create({
    bios: image,
    optionRoms: [{ name: "marker.rom", image: buildMarkerRom() }],
    onEvent: (e) => {
      switch (e.kind) {
        case "debug":
          events.push({ kind: "line", boot: e.boot, text: e.text });
          return;
        case "pam":
          events.push({
            kind: "pam",
            boot: e.boot,
            offset: e.offset,
            width: e.width,
            value: e.value,
            changes: e.changes.map((c) => ({ range: `${c.range}`, visibility: c.visibility })),
          });
          if (e.boot === 1 && e.changes.some((c) => c.visibility === "read-only")) {
            endOfPost = {
              label: "at the end of POST (PAM locked)",
              regions: regionRows(machine.manager),
              slots: slotRows(machine.partition, undefined).map((row) => ({
                ...row,
                note: slotNote(machine, row.range),
              })),
            };
          }
          return;
        case "reset":
          events.push({ kind: "reset", boot: e.boot, how: e.how });
          return;
        case "droppedWrite":
          events.push({ kind: "droppedWrite", boot: e.boot, gpa: e.gpa });
          return;
      }
    },
  }));
  const started = performance.now();
  const first = machine.run((e) =>
    e.kind === "debug" && (e.text === MarkerRomLine.dropped || e.text === MarkerRomLine.stuck)
  );
  const optionRomByte = machine.manager.client().guestMemory().readU8(
    0xc0000 + MARKER_TARGET_OFFSET,
  );
  const second = first.reason === "until"
    ? machine.run((e) => e.kind === "debug" && e.boot === 2)
    : first;
  const milliseconds = performance.now() - started;
  const lines = (boot: number) =>
    events.flatMap((e) => e.kind === "line" && e.boot === boot ? [e.text] : []);
  const banner = (text: string | undefined) => text?.startsWith("SeaBIOS (version ") ?? false;
  const pamBoot2 = events.some((e) => e.kind === "pam" && e.boot === 2);
  const checks = [
    { what: "the banner is the firmware's first line", ok: banner(lines(1)[0]) },
    {
      what: "the option ROM's init ran during POST and its boot entry at boot time",
      ok: lines(1).includes(MarkerRomLine.init) && lines(1).includes(MarkerRomLine.boot),
    },
    {
      what: "its write to its own image after the PAM lock was dropped (GuestMemory agrees)",
      ok: lines(1).includes(MarkerRomLine.dropped) && optionRomByte === MARKER_TARGET_VALUE,
    },
    {
      what: "a warm reset through 0xcf9 closed PAM and the second banner ran from ROM",
      ok: second.reason === "until" && events.some((e) => e.kind === "reset") &&
        banner(lines(2)[0]) && !pamBoot2,
    },
  ];
  return {
    status: "booted",
    bios,
    size: image.length,
    events,
    endOfPost,
    optionRomByte,
    checks,
    milliseconds,
    ok: checks.every((c) => c.ok),
  };
}
