/**
 * The i440FX PAM registers (Programmable Attribute Map, host bridge config
 * space 0x59-0x5f) as RAM visibility changes.
 *
 * @module
 */

import { MemoryRange } from "../layout/memory_range.ts";
import { RamVisibility, type RamVisibilityControl } from "../regions/ram_visibility_control.ts";
import { X86ChipsetError } from "./x86_chipset_error.ts";

/**
 * The four settings of a PAM field (two bits: bit 0 read enable, bit 1
 * write enable). "ROM" means what lies below the RAM: the BIOS image or
 * nothing (the access then goes to the PCI bus, here: the VMM).
 *
 * @example
 * ```ts
 * import { PamMode } from "./i440fx_pam.ts";
 * import assert from "node:assert/strict";
 * assert.equal(PamMode.ReadOnly, 1);
 * ```
 */
export const PamMode = {
  /** `00`: reads and writes go to ROM / PCI. */
  Unmapped: 0,
  /** `01`: reads from RAM, writes to ROM / PCI (dropped by a ROM). */
  ReadOnly: 1,
  /** `10`: writes to RAM, reads from ROM / PCI. Modelled as {@linkcode PamMode.Unmapped}: see {@linkcode I440fxPam}. */
  WriteOnly: 2,
  /** `11`: ordinary RAM. */
  ReadWrite: 3,
} as const;

/** One of the {@linkcode PamMode} values. */
export type PamMode = typeof PamMode[keyof typeof PamMode];

/**
 * What the guest is shown of a PAM piece in each mode. Mode `10` (write
 * RAM, read ROM) cannot be given to a KVM guest as such: a memory slot has
 * one backing for reads and writes. It is shown as Unmapped, so that reads
 * are right (they see the ROM, or exit to the VMM) and writes are lost,
 * rather than as ReadWrite, where writes would be right but reads would
 * return RAM instead of the ROM. QEMU's i440FX does the same (mode 10 maps
 * the PCI address space); SeaBIOS never uses it.
 */
const VISIBILITY: Record<PamMode, RamVisibility> = {
  [PamMode.Unmapped]: RamVisibility.Unmapped,
  [PamMode.ReadOnly]: RamVisibility.ReadOnly,
  [PamMode.WriteOnly]: RamVisibility.Unmapped,
  [PamMode.ReadWrite]: RamVisibility.ReadWrite,
};

/** Config space offset of PAM0, the first PAM register. */
export const PAM0 = 0x59;
/** Config space offset of PAM6, the last PAM register. */
export const PAM6 = 0x5f;

/** One of the 13 PAM-controlled pieces: its register, nibble and range. */
interface PamPiece {
  readonly register: number;
  readonly shift: 0 | 4;
  readonly range: MemoryRange;
}

/** The 13 pieces in address order: 0xc0000-0xf0000 in 16 KiB, then 0xf0000-0x100000. */
const PIECES: readonly PamPiece[] = (() => {
  const pieces: PamPiece[] = [];
  for (let i = 0; i < 12; i++) {
    const start = 0xc0000n + BigInt(i) * 0x4000n;
    pieces.push({
      register: 0x5a + (i >> 1),
      shift: (i & 1) === 0 ? 0 : 4,
      range: new MemoryRange(start, start + 0x4000n),
    });
  }
  pieces.push({ register: PAM0, shift: 4, range: new MemoryRange(0xf0000n, 0x100000n) });
  return pieces;
})();

/**
 * A PAM piece whose mode a config write changed.
 *
 * @example
 * ```ts
 * import type { PamChange } from "./i440fx_pam.ts";
 * import assert from "node:assert/strict";
 * const show = (c: PamChange) => `${c.range} ${c.mode} ${c.visibility}`;
 * assert.equal(typeof show, "function");
 * ```
 */
export interface PamChange {
  /** The PAM register holding the piece's field (0x59-0x5f). */
  readonly register: number;
  /** The piece. */
  readonly range: MemoryRange;
  /** The new mode. */
  readonly mode: PamMode;
  /** What the guest now sees there. */
  readonly visibility: RamVisibility;
  /** The mode before the write. */
  readonly previousMode: PamMode;
}

/**
 * The PAM registers of an i440FX host bridge (PCI 00:00.0), driving
 * `RamVisibilityControl.setRamVisibility` for the 13 PAM-controlled pieces
 * of a manager built with x86 legacy support: PAM0 bits 4-5 control
 * 0xf0000-0x100000 (its low nibble is reserved), PAM1-PAM6 (0x5a-0x5f)
 * control 0xc0000-0xf0000 in 16 KiB pieces, low nibble first. The VGA
 * window (0xa0000-0xc0000) is not PAM-controlled.
 *
 * Feed it every host bridge config write, of any width and at any offset
 * (SeaBIOS writes dwords at 0x58 and 0x5c): it keeps the bytes that fall in
 * 0x59-0x5f and ignores the rest. Only pieces whose visibility changes are
 * passed to `setRamVisibility`. Modes: `00` Unmapped (the BIOS image or
 * nothing shows through), `01` ReadOnly, `11` ReadWrite, and `10` (write
 * RAM, read ROM), which a memory slot cannot express and which is shown as
 * Unmapped: reads stay right, writes are lost (see {@linkcode PamMode}).
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, MemoryLayout } from "../mod.ts";
 * import { I440fxPam } from "../x86.ts";
 * import assert from "node:assert/strict";
 *
 * using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
 *   MemoryLayout.fromGaps(2n << 20n, []),
 * );
 * const pam = I440fxPam.create(manager.ramVisibilityControl()); // all 13 pieces Unmapped
 * const memory = manager.client().guestMemory();
 * assert.equal(memory.isMapped(0xf0000n, 4), false);
 * pam.configWrite(0x58, 4, 0x00003000); // byte 0x59 (PAM0) = 0x30: 0xf0000-0x100000 read-write
 * assert.equal(pam.configRead(0x59, 1), 0x30);
 * assert.equal(memory.isMapped(0xf0000n, 4, true), true);
 * ```
 */
export class I440fxPam {
  readonly #control: RamVisibilityControl;
  readonly #registers = new Uint8Array(PAM6 - PAM0 + 1);
  readonly #visibility: RamVisibility[];

  private constructor(control: RamVisibilityControl) {
    this.#control = control;
    this.#visibility = PIECES.map(() => RamVisibility.ReadWrite);
  }

  /**
   * A decoder in the power-on state: every PAM register 0, so all 13
   * pieces are made Unmapped.
   *
   * @param control The RAM visibility control of an x86 legacy manager.
   * @returns The decoder.
   * @throws {RegionError} `invalidRamRange` when the manager was built
   *   without x86 legacy support.
   */
  static create(control: RamVisibilityControl): I440fxPam {
    const pam = new I440fxPam(control);
    PIECES.forEach((piece, i) => {
      control.setRamVisibility(piece.range, RamVisibility.Unmapped);
      pam.#visibility[i] = RamVisibility.Unmapped;
    });
    return pam;
  }

  /** The 13 PAM-controlled pieces, in address order. */
  static get pieces(): readonly MemoryRange[] {
    return PIECES.map((p) => p.range);
  }

  /**
   * A host bridge config write: the bytes of `value` at 0x59-0x5f become
   * the PAM registers, the others are ignored.
   *
   * @param offset Config space offset of the first byte.
   * @param width 1, 2 or 4 bytes.
   * @param value The value written (little-endian).
   * @returns The pieces whose mode changed, in address order.
   * @throws {X86ChipsetError} `badConfigAccess` for a bad width or an access
   *   outside the 256-byte config space.
   * @throws {RegionError} when a visibility change is refused; the
   *   registers then hold the written value and the pieces before the
   *   refused one (in address order) have their new visibility.
   */
  configWrite(offset: number, width: number, value: number): PamChange[] {
    checkAccess(offset, width);
    const before = PIECES.map((p) => this.#mode(p));
    for (let i = 0; i < width; i++) {
      const at = offset + i;
      if (at >= PAM0 && at <= PAM6) this.#registers[at - PAM0] = (value >>> (8 * i)) & 0xff;
    }
    return this.#apply(before);
  }

  /**
   * A host bridge config read of the PAM registers.
   *
   * @param offset Config space offset of the first byte.
   * @param width 1, 2 or 4 bytes.
   * @returns The PAM register bytes in place, 0 for the bytes outside
   *   0x59-0x5f (the host bridge fills those).
   * @throws {X86ChipsetError} `badConfigAccess`, as for writes.
   */
  configRead(offset: number, width: number): number {
    checkAccess(offset, width);
    let value = 0;
    for (let i = 0; i < width; i++) {
      const at = offset + i;
      if (at >= PAM0 && at <= PAM6) value |= this.#registers[at - PAM0] << (8 * i);
    }
    return value >>> 0;
  }

  /**
   * Back to the power-on state (a PCI reset of the host bridge): every PAM
   * register 0, every piece Unmapped.
   *
   * @returns The pieces whose mode changed.
   */
  reset(): PamChange[] {
    const before = PIECES.map((p) => this.#mode(p));
    this.#registers.fill(0);
    return this.#apply(before);
  }

  /**
   * The current state of every piece.
   *
   * @returns One row per piece, in address order.
   */
  state(): {
    readonly range: MemoryRange;
    readonly mode: PamMode;
    readonly visibility: RamVisibility;
  }[] {
    return PIECES.map((piece, i) => ({
      range: piece.range,
      mode: this.#mode(piece),
      visibility: this.#visibility[i],
    }));
  }

  #mode(piece: PamPiece): PamMode {
    return ((this.#registers[piece.register - PAM0] >> piece.shift) & 3) as PamMode;
  }

  #apply(before: readonly PamMode[]): PamChange[] {
    const changes: PamChange[] = [];
    PIECES.forEach((piece, i) => {
      const mode = this.#mode(piece);
      if (mode === before[i]) return;
      const visibility = VISIBILITY[mode];
      if (visibility !== this.#visibility[i]) {
        this.#control.setRamVisibility(piece.range, visibility);
        this.#visibility[i] = visibility;
      }
      changes.push({
        register: piece.register,
        range: piece.range,
        mode,
        visibility,
        previousMode: before[i],
      });
    });
    return changes;
  }
}

function checkAccess(offset: number, width: number): void {
  if (
    (width !== 1 && width !== 2 && width !== 4) || !Number.isInteger(offset) || offset < 0 ||
    offset + width > 256
  ) {
    throw new X86ChipsetError({ kind: "badConfigAccess", offset, width });
  }
}
