/**
 * The i440FX host bridge (PCI 00:00.0, 8086:1237) with its PAM registers.
 *
 * @module
 */

import { type I440fxPam, PAM0, PAM6, type PamChange } from "../x86.ts";
import { PciConfigSpace, type PciFunction } from "./pci_bus.ts";

/** A config write that touched the PAM registers, and what it changed. */
export interface PamWrite {
  /** Config offset of the access. */
  readonly offset: number;
  /** Its width in bytes. */
  readonly width: number;
  /** The value written. */
  readonly value: number;
  /** The pieces whose mode changed. */
  readonly changes: readonly PamChange[];
}

/**
 * The host bridge's config space; bytes 0x59-0x5f are the PAM registers of
 * an {@linkcode I440fxPam}, and every write that touches them is reported
 * to `onPamWrite`.
 */
export class I440fxHostBridge implements PciFunction {
  readonly pam: I440fxPam;
  readonly #space = new PciConfigSpace(0x8086, 0x1237, 0x060000, 0x02);
  readonly #onPamWrite: (write: PamWrite) => void;

  constructor(pam: I440fxPam, onPamWrite: (write: PamWrite) => void) {
    this.pam = pam;
    this.#onPamWrite = onPamWrite;
  }

  configRead(offset: number, size: number): number {
    return (this.#space.configRead(offset, size) | this.pam.configRead(offset, size)) >>> 0;
  }

  configWrite(offset: number, size: number, value: number): void {
    const touchesPam = offset <= PAM6 && offset + size > PAM0;
    // The space keeps the other bytes; the PAM bytes stay 0 there.
    let rest = value >>> 0;
    for (let i = 0; i < size; i++) {
      const at = offset + i;
      if (at >= PAM0 && at <= PAM6) rest &= ~(0xff << (8 * i));
    }
    this.#space.configWrite(offset, size, rest >>> 0);
    if (touchesPam) {
      const changes = this.pam.configWrite(offset, size, value);
      this.#onPamWrite({ offset, width: size, value: value >>> 0, changes });
    }
  }

  /** What the last {@linkcode I440fxHostBridge.reset} changed in PAM. */
  lastResetChanges: readonly PamChange[] = [];

  /** Power-on config values; the PAM registers to 0 (every piece Unmapped). */
  reset(): void {
    this.#space.reset();
    this.lastResetChanges = this.pam.reset();
  }
}
