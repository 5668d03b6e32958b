/**
 * The interface of the machine's port I/O devices.
 *
 * @module
 */

/** A device on the x86 I/O port bus. */
export interface PortDevice {
  /**
   * A guest `in` of `size` bytes at `port`.
   *
   * @returns The value, zero-extended.
   */
  read(port: number, size: number): number;
  /** A guest `out` of the low `size` bytes of `value` at `port`. */
  write(port: number, size: number, value: number): void;
}
