/**
 * A 16550 UART without interrupts or receive data: enough for firmware to
 * find COM1 and print on it.
 *
 * @module
 */

import type { PortDevice } from "./port_device.ts";

/** COM1's base port. */
export const COM1_BASE = 0x3f8;

const LSR_THRE_TEMT = 0x60; // transmitter empty
const LCR_DLAB = 0x80;

/**
 * Registers at `base` + 0-7: THR/RBR (DLL with DLAB), IER (DLM with DLAB),
 * IIR/FCR, LCR, MCR, LSR, MSR, SCR. Transmitted bytes are collected, and
 * each complete line goes to `onLine`.
 */
export class Uart16550 implements PortDevice {
  readonly base: number;
  readonly #onLine: (line: string) => void;
  readonly #regs = new Uint8Array(8);
  #dll = 0x0c;
  #dlm = 0;
  #line = "";
  #all = "";

  constructor(base: number, onLine: (line: string) => void) {
    this.base = base;
    this.#onLine = onLine;
  }

  /** Everything transmitted so far. */
  get output(): string {
    return this.#all;
  }

  /** Back to the power-on register values (output is kept). */
  reset(): void {
    this.#regs.fill(0);
    this.#dll = 0x0c;
    this.#dlm = 0;
  }

  read(port: number, _size: number): number {
    const reg = port - this.base;
    const dlab = (this.#regs[3] & LCR_DLAB) !== 0;
    switch (reg) {
      case 0:
        return dlab ? this.#dll : 0; // nothing received
      case 1:
        return dlab ? this.#dlm : this.#regs[1] & 0x0f;
      case 2:
        return 0x01; // no interrupt pending, FIFOs off
      case 5:
        return LSR_THRE_TEMT;
      case 6:
        return 0xb0; // DCD, DSR, CTS
      default:
        return this.#regs[reg];
    }
  }

  write(port: number, _size: number, value: number): void {
    const reg = port - this.base;
    const byte = value & 0xff;
    const dlab = (this.#regs[3] & LCR_DLAB) !== 0;
    if (reg === 0 && dlab) this.#dll = byte;
    else if (reg === 1 && dlab) this.#dlm = byte;
    else if (reg === 0) this.#transmit(byte);
    else if (reg !== 2 && reg !== 5 && reg !== 6) this.#regs[reg] = byte;
  }

  #transmit(byte: number): void {
    const c = String.fromCharCode(byte);
    this.#all += c;
    if (c === "\n") {
      this.#onLine(this.#line.endsWith("\r") ? this.#line.slice(0, -1) : this.#line);
      this.#line = "";
    } else {
      this.#line += c;
    }
  }
}
