/**
 * PCI configuration mechanism #1 (ports 0xcf8/0xcfc-0xcff) on bus 0, and
 * the PIIX3 reset control register at 0xcf9.
 *
 * @module
 */

import type { PortDevice } from "./port_device.ts";

/** The config address port (32-bit). */
export const PCI_CONFIG_ADDRESS = 0xcf8;
/** The first config data port. */
export const PCI_CONFIG_DATA = 0xcfc;
/** The PIIX3 reset control register (byte at 0xcf9). */
export const RESET_CONTROL_PORT = 0xcf9;

/** A PCI function's 256-byte config space. */
export interface PciFunction {
  /** A config read of 1, 2 or 4 bytes at `offset` (aligned to `size`). */
  configRead(offset: number, size: number): number;
  /** A config write. */
  configWrite(offset: number, size: number, value: number): void;
  /** Back to power-on values. */
  reset(): void;
}

/**
 * A plain config space: identifiers, class and header type read-only,
 * BARs absent (read as 0), every other byte read-write.
 */
export class PciConfigSpace implements PciFunction {
  readonly #initial: Uint8Array;
  readonly #bytes: Uint8Array;

  /**
   * @param vendor Vendor id.
   * @param device Device id.
   * @param classCode Class, subclass and programming interface (24 bits).
   * @param revision Revision id.
   */
  constructor(vendor: number, device: number, classCode: number, revision: number) {
    const b = new Uint8Array(256);
    const v = new DataView(b.buffer);
    v.setUint16(0x00, vendor, true);
    v.setUint16(0x02, device, true);
    v.setUint16(0x06, 0x0200, true); // status: medium DEVSEL timing
    b[0x08] = revision;
    b[0x09] = classCode & 0xff;
    b[0x0a] = (classCode >> 8) & 0xff;
    b[0x0b] = (classCode >> 16) & 0xff;
    this.#initial = b;
    this.#bytes = b.slice();
  }

  configRead(offset: number, size: number): number {
    let value = 0;
    for (let i = 0; i < size; i++) value |= this.#bytes[offset + i] << (8 * i);
    return value >>> 0;
  }

  configWrite(offset: number, size: number, value: number): void {
    for (let i = 0; i < size; i++) {
      const at = offset + i;
      if (at < 0x04 || (at >= 0x06 && at < 0x0c) || at === 0x0e || (at >= 0x10 && at < 0x28)) {
        continue; // ids, status, class, header type, BARs
      }
      if (at >= 0x30 && at < 0x34) continue; // expansion ROM BAR: none
      this.#bytes[at] = (value >>> (8 * i)) & 0xff;
    }
  }

  reset(): void {
    this.#bytes.set(this.#initial);
  }
}

/**
 * Bus 0 with the functions given at construction (by device and function
 * number); other functions read as all ones. A write to 0xcf9 with bit 2
 * set (SeaBIOS writes 0x02 then 0x06) calls `onReset`.
 */
export class PciBus implements PortDevice {
  readonly #functions = new Map<number, PciFunction>();
  readonly #onReset: () => void;
  #address = 0;
  #resetControl = 0;

  constructor(onReset: () => void) {
    this.#onReset = onReset;
  }

  /** Places `fn` at 00:`device`.`func`. */
  add(device: number, func: number, fn: PciFunction): void {
    this.#functions.set((device << 3) | func, fn);
  }

  /** Resets every function and the address latch. */
  reset(): void {
    this.#address = 0;
    this.#resetControl = 0;
    for (const fn of this.#functions.values()) fn.reset();
  }

  read(port: number, size: number): number {
    if (port === PCI_CONFIG_ADDRESS && size === 4) return this.#address >>> 0;
    if (port === RESET_CONTROL_PORT && size === 1) return this.#resetControl;
    if (port >= PCI_CONFIG_DATA && port < PCI_CONFIG_DATA + 4) {
      const fn = this.#selected();
      const offset = (this.#address & 0xfc) + (port - PCI_CONFIG_DATA);
      if (fn === undefined) return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
      return fn.configRead(offset, size);
    }
    return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
  }

  write(port: number, size: number, value: number): void {
    if (port === PCI_CONFIG_ADDRESS && size === 4) {
      this.#address = value >>> 0;
    } else if (port === RESET_CONTROL_PORT && size === 1) {
      this.#resetControl = value & 0x0e;
      if ((value & 0x04) !== 0) this.#onReset();
    } else if (port >= PCI_CONFIG_DATA && port < PCI_CONFIG_DATA + 4) {
      const offset = (this.#address & 0xfc) + (port - PCI_CONFIG_DATA);
      this.#selected()?.configWrite(offset, size, value);
    }
  }

  #selected(): PciFunction | undefined {
    const a = this.#address;
    if ((a & 0x80000000) === 0 || ((a >> 16) & 0xff) !== 0) return undefined;
    return this.#functions.get((a >> 8) & 0xff);
  }
}
