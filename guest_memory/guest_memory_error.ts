import { hex } from "../layout/_hex.ts";

/** Why a guest memory access was refused (see {@linkcode GuestMemoryError}). */
export type GuestMemoryErrorKind = GuestMemoryError["kind"];

/** What a refused access asked for. */
export type GuestMemoryAccess = GuestMemoryError["access"];

/**
 * A guest memory access was refused before any memory was touched. `gpa` is
 * the offending guest physical address (the first byte that fails the
 * check, or the start of the access for `overflow`, `invalidAddress` and
 * `misaligned`); `access` is the whole access.
 *
 * Messages (stable; addresses in lower-case hex, `{end}` is the reservation
 * size):
 * - `invalidAddress`: `guest address {gpa} is not a valid 64-bit address`
 * - `overflow`: `guest address range at {gpa} of {length} bytes wraps past 2^64`
 * - `outOfRange`: `guest address {gpa} is outside guest memory 0x0-{end}`
 * - `unmapped`: `guest address {gpa} is not mapped`
 * - `readOnly`: `guest address {gpa} is mapped read-only`
 * - `misaligned`: `guest address {gpa} is not aligned to {size} bytes`
 *
 * @example
 * ```ts
 * import { GuestMemoryError } from "./guest_memory_error.ts";
 * import assert from "node:assert/strict";
 * const err = GuestMemoryError.unmapped(0x1000n, { address: 0x1000n, length: 8n, write: false });
 * assert.equal(err.kind, "unmapped");
 * assert.equal(err.message, "guest address 0x1000 is not mapped");
 * ```
 */
export class GuestMemoryError extends Error {
  /**
   * Why the access was refused:
   * - `invalidAddress`: the address is negative or not below 2^64;
   * - `overflow`: the range `[address, address + length)` wraps past 2^64;
   * - `outOfRange`: the range reaches past the end of the guest address
   *   reservation;
   * - `unmapped`: a byte of the range has no active mapping;
   * - `readOnly`: a write touches a byte that is mapped read-only;
   * - `misaligned`: an atomic access is not naturally aligned;
   * - `disposed`: the accessor, or the manager behind it, has been disposed.
   */
  readonly kind:
    | "invalidAddress"
    | "overflow"
    | "outOfRange"
    | "unmapped"
    | "readOnly"
    | "misaligned"
    | "disposed";
  /** The offending guest physical address. */
  readonly gpa: bigint;
  /** The refused access: first guest physical address, length in bytes, whether it writes. */
  readonly access: {
    readonly address: bigint;
    readonly length: bigint;
    readonly write: boolean;
  };

  /** Creates an error of `kind` at `gpa` with an explicit message; prefer the static factories. */
  constructor(kind: GuestMemoryErrorKind, gpa: bigint, access: GuestMemoryAccess, message: string) {
    super(message);
    this.name = "GuestMemoryError";
    this.kind = kind;
    this.gpa = gpa;
    this.access = access;
  }

  /** `guest address {gpa} is not a valid 64-bit address`. */
  static invalidAddress(gpa: bigint, access: GuestMemoryAccess): GuestMemoryError {
    return new GuestMemoryError(
      "invalidAddress",
      gpa,
      access,
      `guest address ${hex(gpa)} is not a valid 64-bit address`,
    );
  }

  /** `guest address range at {gpa} of {length} bytes wraps past 2^64`. */
  static overflow(access: GuestMemoryAccess): GuestMemoryError {
    return new GuestMemoryError(
      "overflow",
      access.address,
      access,
      `guest address range at ${hex(access.address)} of ${
        hex(access.length)
      } bytes wraps past 2^64`,
    );
  }

  /** `guest address {gpa} is outside guest memory 0x0-{end}`. */
  static outOfRange(gpa: bigint, end: bigint, access: GuestMemoryAccess): GuestMemoryError {
    return new GuestMemoryError(
      "outOfRange",
      gpa,
      access,
      `guest address ${hex(gpa)} is outside guest memory 0x0-${hex(end)}`,
    );
  }

  /** `guest address {gpa} is not mapped`. */
  static unmapped(gpa: bigint, access: GuestMemoryAccess): GuestMemoryError {
    return new GuestMemoryError("unmapped", gpa, access, `guest address ${hex(gpa)} is not mapped`);
  }

  /** `guest address {gpa} is mapped read-only`. */
  static readOnly(gpa: bigint, access: GuestMemoryAccess): GuestMemoryError {
    return new GuestMemoryError(
      "readOnly",
      gpa,
      access,
      `guest address ${hex(gpa)} is mapped read-only`,
    );
  }

  /** `guest address {gpa} is not accessible: the guest memory manager has been disposed`. */
  static disposed(access: GuestMemoryError["access"]): GuestMemoryError {
    return new GuestMemoryError(
      "disposed",
      access.address,
      access,
      `guest address ${
        hex(access.address)
      } is not accessible: the guest memory manager has been disposed`,
    );
  }

  /** `guest address {gpa} is not aligned to {size} bytes`. */
  static misaligned(size: number, access: GuestMemoryAccess): GuestMemoryError {
    return new GuestMemoryError(
      "misaligned",
      access.address,
      access,
      `guest address ${hex(access.address)} is not aligned to ${size} bytes`,
    );
  }
}
