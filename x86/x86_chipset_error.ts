/**
 * The error of the x86 chipset helpers.
 *
 * @module
 */

/**
 * An x86 chipset helper was given something it cannot model; nothing
 * changed. `kind` says what (`detail` holds the values its message shows):
 *
 * - `badConfigAccess`: `config space access of {width} bytes at {offset}
 *   is not 1, 2 or 4 bytes inside the 256-byte config space` (PAM decoder)
 * - `badRomSize`: `BIOS image of {size} bytes is not a positive multiple
 *   of 4 KiB of at most {max} bytes` (BIOS ROM)
 *
 * @example
 * ```ts
 * import { X86ChipsetError } from "./x86_chipset_error.ts";
 * import assert from "node:assert/strict";
 * const err = new X86ChipsetError({ kind: "badRomSize", size: 1000, max: 16777216 });
 * assert.equal(err.kind, "badRomSize");
 * assert.equal(
 *   err.message,
 *   "BIOS image of 1000 bytes is not a positive multiple of 4 KiB of at most 16777216 bytes",
 * );
 * ```
 */
export class X86ChipsetError extends Error {
  /** What was refused. */
  readonly kind: X86ChipsetError["detail"]["kind"];
  /** The case, with the values its message shows. */
  readonly detail:
    | { readonly kind: "badConfigAccess"; readonly offset: number; readonly width: number }
    | { readonly kind: "badRomSize"; readonly size: number; readonly max: number };

  /**
   * Creates the error for `detail`.
   *
   * @param detail The case and its values.
   */
  constructor(detail: X86ChipsetError["detail"]) {
    super(describe(detail));
    this.name = "X86ChipsetError";
    this.kind = detail.kind;
    this.detail = detail;
  }
}

function describe(d: X86ChipsetError["detail"]): string {
  switch (d.kind) {
    case "badConfigAccess":
      return `config space access of ${d.width} bytes at ${d.offset} is not 1, 2 or 4 bytes inside the 256-byte config space`;
    case "badRomSize":
      return `BIOS image of ${d.size} bytes is not a positive multiple of 4 KiB of at most ${d.max} bytes`;
  }
}
