/**
 * What went wrong in a `KvmPartition` call.
 *
 * @example
 * ```ts
 * import type { KvmPartitionErrorKind } from "./kvm_partition_error.ts";
 * const kind: KvmPartitionErrorKind = "partial_unmap";
 * console.log(kind);
 * ```
 */
export type KvmPartitionErrorKind =
  | "slots_exhausted"
  | "partial_unmap"
  | "overlap"
  | "invalid_range"
  | "map"
  | "unmap"
  | "prefetch"
  | "pin";

/**
 * A KVM partition operation failed; `kind` says which rule or step, and an
 * OS failure (a SyscallError such as `ioctl(KVM_SET_USER_MEMORY_REGION)`)
 * is the `cause`.
 *
 * @example
 * ```ts
 * import { KvmPartitionError } from "./kvm_partition_error.ts";
 * const err = new KvmPartitionError("slots_exhausted", "no free memory slot: all 32764 slots are in use");
 * console.log(err.kind, err.message);
 * ```
 */
export class KvmPartitionError extends Error {
  /** The failed rule or step. */
  readonly kind: KvmPartitionErrorKind;

  /** Creates the error of `kind` with `message`, optionally caused by `cause`. */
  constructor(kind: KvmPartitionErrorKind, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "KvmPartitionError";
    this.kind = kind;
  }
}
