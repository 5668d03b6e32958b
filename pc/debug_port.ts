/**
 * The QEMU/Bochs debug console: one byte written to port 0x402 is one
 * character of firmware output.
 *
 * @module
 */

import type { PortDevice } from "./port_device.ts";

/** The port SeaBIOS writes its debug output to on QEMU. */
export const DEBUG_PORT = 0x402;
/** What reading the port returns: SeaBIOS only uses the port when it reads this. */
export const DEBUG_PORT_READBACK = 0xe9;

/**
 * Port 0x402: collects what the guest writes, and calls `onLine` with each
 * complete line (without its newline).
 */
export class DebugPort implements PortDevice {
  readonly #onLine: (line: string) => void;
  #line = "";
  #all = "";

  constructor(onLine: (line: string) => void) {
    this.#onLine = onLine;
  }

  /** Everything written so far. */
  get output(): string {
    return this.#all;
  }

  read(_port: number, _size: number): number {
    return DEBUG_PORT_READBACK;
  }

  write(_port: number, _size: number, value: number): void {
    const c = String.fromCharCode(value & 0xff);
    this.#all += c;
    if (c === "\n") {
      const line = this.#line.endsWith("\r") ? this.#line.slice(0, -1) : this.#line;
      this.#line = "";
      this.#onLine(line);
    } else {
      this.#line += c;
    }
  }
}
