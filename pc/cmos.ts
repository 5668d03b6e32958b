/**
 * The MC146818 CMOS/RTC as firmware on a PC reads it: memory sizes, the
 * processor count, a fixed date. Ports 0x70 (index, bit 7 masks NMI) and
 * 0x71 (data).
 *
 * @module
 */

import type { PortDevice } from "./port_device.ts";

/** The CMOS index port. */
export const CMOS_INDEX_PORT = 0x70;
/** The CMOS data port. */
export const CMOS_DATA_PORT = 0x71;

const MIB = 1n << 20n;
const SIXTEEN_MIB = 16n * MIB;

/**
 * 128 bytes of CMOS with the RAM size where SeaBIOS (and the PC BIOS
 * tradition) read it:
 *
 * - 0x15/0x16: base memory in KiB (640);
 * - 0x17/0x18 and 0x30/0x31: memory from 1 MiB to 64 MiB, in KiB;
 * - 0x34/0x35: memory from 16 MiB to the end of low RAM, in 64 KiB units;
 * - 0x5b-0x5d: memory above 4 GiB, in 64 KiB units;
 * - 0x5f: processors minus one.
 *
 * The clock reads 2026-12-01 00:00:00 (BCD, 24-hour) and never updates.
 */
export class Cmos implements PortDevice {
  readonly #bytes = new Uint8Array(128);
  #index = 0;

  /**
   * @param lowRam RAM below 4 GiB, in bytes (from 0).
   * @param highRam RAM above 4 GiB, in bytes.
   * @param cpus Processor count.
   */
  constructor(lowRam: bigint, highRam: bigint, cpus = 1) {
    const b = this.#bytes;
    b.set([0x00, 0, 0x00, 0, 0x00, 0, 0x03, 0x01, 0x12, 0x26], 0); // time, weekday, date
    b[0x0a] = 0x26; // 32.768 kHz, 1024 Hz periodic rate; UIP clear
    b[0x0b] = 0x02; // 24-hour, BCD
    b[0x0d] = 0x80; // CMOS battery good
    b[0x32] = 0x20; // century (BCD)
    b[0x15] = 0x80; // 640 KiB
    b[0x16] = 0x02;
    const ext = lowRam > MIB ? (lowRam - MIB) / 1024n : 0n;
    const extKib = Number(ext > 0xfc00n ? 0xfc00n : ext); // at most 63 MiB
    b[0x17] = b[0x30] = extKib & 0xff;
    b[0x18] = b[0x31] = extKib >> 8;
    const above16 = lowRam > SIXTEEN_MIB ? (lowRam - SIXTEEN_MIB) >> 16n : 0n;
    const units16 = Number(above16 > 0xffffn ? 0xffffn : above16);
    b[0x34] = units16 & 0xff;
    b[0x35] = units16 >> 8;
    const above4g = Number(highRam >> 16n);
    b[0x5b] = above4g & 0xff;
    b[0x5c] = (above4g >> 8) & 0xff;
    b[0x5d] = (above4g >> 16) & 0xff;
    b[0x5f] = cpus - 1;
  }

  /**
   * One CMOS byte.
   *
   * @param index 0-127.
   * @returns Its value.
   */
  byte(index: number): number {
    return this.#bytes[index & 0x7f];
  }

  read(port: number, _size: number): number {
    if (port === CMOS_INDEX_PORT) return 0xff;
    const index = this.#index;
    if (index === 0x0c) return 0; // no interrupt flags (reading clears them)
    return this.#bytes[index];
  }

  write(port: number, _size: number, value: number): void {
    if (port === CMOS_INDEX_PORT) {
      this.#index = value & 0x7f;
      return;
    }
    const index = this.#index;
    if (index === 0x0c || index === 0x0d) return; // read-only
    if (index === 0x0a) {
      this.#bytes[index] = value & 0x7f; // UIP is read-only
      return;
    }
    this.#bytes[index] = value & 0xff;
  }
}
