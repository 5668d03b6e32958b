/**
 * x86 PC chipset memory for membacking: the i440FX PAM registers as RAM
 * visibility changes ({@linkcode I440fxPam}) and a BIOS image mapped as
 * real hardware decodes it ({@linkcode BiosRom}). Both work on a
 * `GuestMemoryManager` built with `x86LegacySupport(true)`.
 *
 * @example
 * ```ts
 * import { I440fxPam, PamMode } from "./x86.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(I440fxPam.pieces.length, 13);
 * assert.equal(`${I440fxPam.pieces[12]}`, "0xf0000-0x100000");
 * assert.equal(PamMode.ReadWrite, 3);
 * ```
 *
 * @module
 */

export { I440fxPam, PAM0, PAM6, type PamChange, PamMode } from "./x86/i440fx_pam.ts";
export { BiosRom, type BiosRomOptions } from "./x86/bios_rom.ts";
export { X86ChipsetError } from "./x86/x86_chipset_error.ts";
