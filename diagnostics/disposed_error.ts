/**
 * An object was used after it was disposed (or closed): `{object} has been
 * disposed`. Every membacking resource throws this one error for use after
 * disposal; `detail.object` names which kind of object it was.
 *
 * @example
 * ```ts
 * import { DisposedError } from "./disposed_error.ts";
 * import assert from "node:assert/strict";
 * const err = new DisposedError({ object: "guest memory manager" });
 * assert.equal(err.kind, "disposed");
 * assert.equal(err.message, "guest memory manager has been disposed");
 * ```
 */
export class DisposedError extends Error {
  /** Always `disposed`. */
  readonly kind: "disposed" = "disposed";
  /** Which object was used after disposal. */
  readonly detail: {
    readonly object:
      | "guest memory manager"
      | "guest memory"
      | "region manager"
      | "shared memory backing"
      | "kvm partition"
      | "kvm vcpu"
      | "guest probe"
      | "file descriptor"
      | "host mapping"
      | "guest RAM snapshot";
  };

  /**
   * Creates the error for `detail.object`.
   *
   * @param detail Which object was used.
   */
  constructor(detail: DisposedError["detail"]) {
    super(`${detail.object} has been disposed`);
    this.name = "DisposedError";
    this.detail = detail;
  }
}
