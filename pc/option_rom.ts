/**
 * A small PnP option ROM of our own, for checking what firmware does with
 * option ROMs: it reports on the debug port, and its boot entry tries to
 * overwrite its own image.
 *
 * @module
 */

/** The byte the boot entry tries to overwrite, and what it writes. */
export const MARKER_TARGET_OFFSET = 0x1f0;
/** The value at {@linkcode MARKER_TARGET_OFFSET} in the image. */
export const MARKER_TARGET_VALUE = 0xa5;
/** What the boot entry writes there. */
export const MARKER_WRITE_VALUE = 0x5a;

/** The lines the ROM prints on port 0x402. */
export const MarkerRomLine = {
  /** Printed by the init entry (POST, shadow RAM still writable). */
  init: "membacking rom: init",
  /** Printed by the boot entry (BEV, called at boot time). */
  boot: "membacking rom: boot entry",
  /** The write to its own image did not change it. */
  dropped: "membacking rom: write to own image dropped",
  /** The write to its own image changed it. */
  stuck: "membacking rom: write to own image stuck",
} as const;

/** The product name in the PnP header (SeaBIOS prints it as the boot device). */
export const MARKER_ROM_NAME = "membacking marker ROM";

const SIZE = 512;
const PNP = 0x20;
const NAME = 0x40;
const INIT_CODE = 0x68;
const BEV_CODE = 0x80;
const STRINGS = 0xc0;

/**
 * Builds the marker ROM: 512 bytes, `55 AA`, one block, a valid checksum,
 * a `$PnP` expansion header whose boot entry vector (BEV) makes the ROM a
 * boot device. Both entries are real-mode code called far with the ROM's
 * segment in CS:
 *
 * - init (offset 3, run by the firmware during POST): prints
 *   {@linkcode MarkerRomLine}`.init` on port 0x402 and returns;
 * - boot entry (run when the firmware boots from it, after it has locked
 *   shadow RAM): prints `boot`, writes {@linkcode MARKER_WRITE_VALUE} to
 *   its own byte at {@linkcode MARKER_TARGET_OFFSET}, reads it back and
 *   prints `dropped` or `stuck`, then returns (the firmware moves on to
 *   the next boot device).
 *
 * @returns The image.
 */
export function buildMarkerRom(): Uint8Array {
  const rom = new Uint8Array(SIZE);
  rom.set([0x55, 0xaa, SIZE / 512], 0);
  rom.set([0xe9, ...le16(INIT_CODE - 6)], 3); // jmp near INIT_CODE
  rom.set(le16(PNP), 0x1a);

  // $PnP expansion header (PnP BIOS spec 1.0a, 32 bytes).
  rom.set([0x24, 0x50, 0x6e, 0x50, 0x01, 0x02], PNP); // "$PnP", revision 1, length 2 x 16
  rom.set(le16(NAME), PNP + 0x10); // product name
  rom.set([0x00, 0x00, 0x00], PNP + 0x12); // device type: unknown
  rom.set([0x14], PNP + 0x15); // device indicators: IPL device, ... (informative)
  rom.set(le16(BEV_CODE), PNP + 0x1a); // boot entry vector
  rom[PNP + 9] = checksumByte(rom.subarray(PNP, PNP + 32));
  rom.set(ascii(`${MARKER_ROM_NAME}\0`), NAME);

  const strings: Record<keyof typeof MarkerRomLine, number> = {
    init: 0,
    boot: 0,
    dropped: 0,
    stuck: 0,
  };
  let at = STRINGS;
  for (const key of Object.keys(MarkerRomLine) as (keyof typeof MarkerRomLine)[]) {
    strings[key] = at;
    const bytes = ascii(`${MarkerRomLine[key]}\n\0`);
    rom.set(bytes, at);
    at += bytes.length;
  }
  if (at > MARKER_TARGET_OFFSET) throw new RangeError("marker ROM strings overflow");
  // print (at PRINT): cs lodsb; test al, al; jz done; out dx, al; jmp print; done: ret
  const PRINT = 0x58;
  rom.set([0x2e, 0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf7, 0xc3], PRINT);

  // init: mov dx, 0x402; mov si, init; call print; retf
  rom.set([
    0xba,
    0x02,
    0x04,
    0xbe,
    ...le16(strings.init),
    0xe8,
    ...le16(PRINT - (INIT_CODE + 9)),
    0xcb,
  ], INIT_CODE);

  const bev = [
    0xba,
    0x02,
    0x04, // mov dx, 0x402
    0xbe,
    ...le16(strings.boot), // mov si, boot
    0xe8,
    0x00,
    0x00, // call print (patched below)
    0x2e,
    0xc6,
    0x06,
    ...le16(MARKER_TARGET_OFFSET),
    MARKER_WRITE_VALUE, // mov byte [cs:target], v
    0x2e,
    0x80,
    0x3e,
    ...le16(MARKER_TARGET_OFFSET),
    MARKER_WRITE_VALUE, // cmp byte [cs:target], v
    0x74,
    0x05, // je stuck
    0xbe,
    ...le16(strings.dropped), // mov si, dropped
    0xeb,
    0x03, // jmp report
    0xbe,
    ...le16(strings.stuck), // stuck: mov si, stuck
    0xe8,
    0x00,
    0x00, // report: call print (patched below)
    0xcb, // retf
  ];
  const call1 = 6, call2 = bev.length - 4;
  bev.splice(call1 + 1, 2, ...le16(PRINT - (BEV_CODE + call1 + 3)));
  bev.splice(call2 + 1, 2, ...le16(PRINT - (BEV_CODE + call2 + 3)));
  rom.set(bev, BEV_CODE);
  if (BEV_CODE + bev.length > STRINGS) throw new RangeError("marker ROM code overflow");

  rom[MARKER_TARGET_OFFSET] = MARKER_TARGET_VALUE;
  rom[SIZE - 1] = checksumByte(rom.subarray(0, SIZE - 1));
  return rom;
}

/** The byte that makes the sum of `bytes` plus itself 0 modulo 256. */
function checksumByte(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum = (sum + b) & 0xff;
  return (0x100 - sum) & 0xff;
}

function le16(value: number): [number, number] {
  const v = value & 0xffff;
  return [v & 0xff, v >> 8];
}

function ascii(text: string): number[] {
  return [...text].map((c) => c.charCodeAt(0));
}
