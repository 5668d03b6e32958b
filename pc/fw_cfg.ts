/**
 * QEMU's firmware configuration device (fw_cfg), legacy port interface:
 * the guest writes a 16-bit key to port 0x510 and reads the item's bytes
 * one at a time from port 0x511.
 *
 * @module
 */

import type { PortDevice } from "./port_device.ts";

/** The selector port (16-bit writes). */
export const FW_CFG_SELECTOR_PORT = 0x510;
/** The data port (byte reads). */
export const FW_CFG_DATA_PORT = 0x511;

/** The fixed keys this device answers (QEMU's `include/standard-headers/linux/qemu_fw_cfg.h`). */
export const FwCfgKey = {
  /** "QEMU". */
  signature: 0x00,
  /** Interface revision and features: bit 0 traditional interface (no DMA). */
  id: 0x01,
  /** RAM size, u64 little-endian. */
  ramSize: 0x03,
  /** Boot processor count, u16. */
  nbCpus: 0x05,
  /** Maximum processor count, u16. */
  maxCpus: 0x0f,
  /** The file directory. */
  fileDir: 0x19,
  /** The first file's key. */
  firstFile: 0x20,
} as const;

/** The bytes of a u64 or u32 or u16, little-endian. */
function le(value: bigint, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) out[i] = Number((value >> BigInt(8 * i)) & 0xffn);
  return out;
}

/**
 * The items: a signature, the interface id (traditional only: no DMA
 * interface is offered, so firmware reads every byte through port 0x511),
 * the RAM size, the processor counts, and named files listed in the file
 * directory (`FW_CFG_FILE_DIR`: a big-endian count, then per file a
 * big-endian size and key, 2 reserved bytes and a 56-byte name). Keys
 * without an item read as zeros.
 */
export class FwCfg implements PortDevice {
  readonly #items = new Map<number, Uint8Array>();
  readonly #files: { name: string; key: number; size: number }[] = [];
  #selected: Uint8Array = new Uint8Array(0);
  #offset = 0;

  /**
   * @param ramSize Guest RAM in bytes.
   * @param cpus Processor count.
   */
  constructor(ramSize: bigint, cpus = 1) {
    this.#items.set(FwCfgKey.signature, new TextEncoder().encode("QEMU"));
    this.#items.set(FwCfgKey.id, le(1n, 4));
    this.#items.set(FwCfgKey.ramSize, le(ramSize, 8));
    this.#items.set(FwCfgKey.nbCpus, le(BigInt(cpus), 2));
    this.#items.set(FwCfgKey.maxCpus, le(BigInt(cpus), 2));
    this.#updateDirectory();
  }

  /**
   * Adds a named file (`etc/boot-fail-wait`, `genroms/x.rom`).
   *
   * @param name At most 55 bytes.
   * @param contents The file's bytes.
   * @returns Its key.
   */
  addFile(name: string, contents: Uint8Array): number {
    const encoded = new TextEncoder().encode(name);
    if (encoded.length > 55) throw new RangeError(`fw_cfg file name ${name} is too long`);
    const key = FwCfgKey.firstFile + this.#files.length;
    this.#files.push({ name, key, size: contents.length });
    this.#items.set(key, contents.slice());
    this.#updateDirectory();
    return key;
  }

  /** The file names, in directory order. */
  get fileNames(): string[] {
    return this.#files.map((f) => f.name);
  }

  /** Deselects (a machine reset). */
  reset(): void {
    this.#selected = new Uint8Array(0);
    this.#offset = 0;
  }

  read(port: number, size: number): number {
    if (port !== FW_CFG_DATA_PORT) return 0;
    let value = 0;
    for (let i = 0; i < size; i++) {
      const byte = this.#offset < this.#selected.length ? this.#selected[this.#offset] : 0;
      this.#offset++;
      value |= byte << (8 * i);
    }
    return value >>> 0;
  }

  write(port: number, _size: number, value: number): void {
    if (port !== FW_CFG_SELECTOR_PORT) return; // data writes are ignored
    this.#selected = this.#items.get(value & 0xffff) ?? new Uint8Array(0);
    this.#offset = 0;
  }

  #updateDirectory(): void {
    const dir = new Uint8Array(4 + 64 * this.#files.length);
    const view = new DataView(dir.buffer);
    view.setUint32(0, this.#files.length);
    this.#files.forEach((file, i) => {
      const at = 4 + 64 * i;
      view.setUint32(at, file.size);
      view.setUint16(at + 4, file.key);
      dir.set(new TextEncoder().encode(file.name), at + 8);
    });
    this.#items.set(FwCfgKey.fileDir, dir);
  }
}
