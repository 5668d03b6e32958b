/**
 * A dirty tracking or snapshot operation failed. `kind` says which rule or
 * step (`detail` holds the values the message shows); an OS or KVM failure
 * (a `SyscallError`, a `KvmPartitionError`) is the `cause`.
 *
 * Messages:
 * - `notTracking`: `an incremental restore needs dirty tracking on since the snapshot was taken`
 * - `stalePoint`: `the dirty tracker was reset after this snapshot was taken (point {point}, snapshot at {snapshotPoint})`
 * - `layoutMismatch`: `a snapshot of RAM {snapshot} cannot be restored into RAM {manager}`
 * - `copy`: `failed to {step} guest RAM ({bytes} bytes)`
 * - `tracking`: `failed to {step} dirty logging of a partition`
 * - `visibility`: `failed to set the RAM visibility of the snapshot`
 *
 * @example
 * ```ts
 * import { SnapshotError } from "./snapshot_error.ts";
 * import assert from "node:assert/strict";
 *
 * const err = new SnapshotError({ kind: "notTracking" });
 * assert.equal(err.kind, "notTracking");
 * assert.equal(err.message, "an incremental restore needs dirty tracking on since the snapshot was taken");
 * ```
 */
export class SnapshotError extends Error {
  /** The failed rule or step. */
  readonly kind: SnapshotError["detail"]["kind"];
  /** The case, with the values its message shows. */
  readonly detail:
    | { readonly kind: "notTracking" }
    | { readonly kind: "stalePoint"; readonly point: number; readonly snapshotPoint: number }
    | { readonly kind: "layoutMismatch"; readonly snapshot: string; readonly manager: string }
    | {
      readonly kind: "copy";
      readonly step: "snapshot" | "restore" | "clone";
      readonly bytes: bigint;
    }
    | { readonly kind: "tracking"; readonly step: "start" | "stop" | "read" }
    | { readonly kind: "visibility" };

  /**
   * Creates the error for `detail`.
   *
   * @param detail The case and its values.
   * @param options `cause`: the OS or KVM error, where one failed.
   */
  constructor(detail: SnapshotError["detail"], options?: ErrorOptions) {
    super(describe(detail), options);
    this.name = "SnapshotError";
    this.kind = detail.kind;
    this.detail = detail;
  }
}

function describe(d: SnapshotError["detail"]): string {
  switch (d.kind) {
    case "notTracking":
      return "an incremental restore needs dirty tracking on since the snapshot was taken";
    case "stalePoint":
      return `the dirty tracker was reset after this snapshot was taken (point ${d.point}, snapshot at ${d.snapshotPoint})`;
    case "layoutMismatch":
      return `a snapshot of RAM ${d.snapshot} cannot be restored into RAM ${d.manager}`;
    case "copy":
      return `failed to ${d.step} guest RAM (${d.bytes} bytes)`;
    case "tracking":
      return `failed to ${d.step} dirty logging of a partition`;
    case "visibility":
      return "failed to set the RAM visibility of the snapshot";
  }
}
