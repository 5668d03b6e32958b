/**
 * Thrown when the library is used without a Deno permission it needs.
 *
 * The message is one line naming the permission and the flag; the stack is
 * cut to that line, so an uncaught one reads as a sentence, not as a trace
 * from inside the FFI layer.
 *
 * @example
 * ```ts
 * import { MissingPermissionError } from "./missing_permission_error.ts";
 * import assert from "node:assert/strict";
 * const err = new MissingPermissionError("ffi", "to call libc");
 * assert.equal(
 *   err.message,
 *   "membacking needs the ffi permission to call libc: run deno with --allow-ffi",
 * );
 * // membacking needs the ffi permission to call libc: run deno with --allow-ffi
 * ```
 */
export class MissingPermissionError extends Error {
  /** The permission that is missing (`"ffi"`, `"read"`, ...). */
  readonly permission: string;

  /** Creates the error for `permission`, `why` saying what it is needed for. */
  constructor(permission: string, why: string) {
    super(
      `membacking needs the ${permission} permission ${why}: run deno with --allow-${permission}`,
    );
    this.name = "MissingPermissionError";
    this.permission = permission;
    this.stack = `${this.name}: ${this.message}`;
  }
}
