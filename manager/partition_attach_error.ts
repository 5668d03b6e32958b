/**
 * Attaching a partition to a guest memory manager failed: `failed to attach
 * partition to memory manager`, with the partition mapping error
 * (`failed to map range to partition` or `failed to pin range to partition`)
 * as `cause`. Nothing stays mapped in the partition.
 *
 * @example
 * ```ts
 * import { PartitionAttachError } from "./partition_attach_error.ts";
 * import { PartitionMapperError } from "../partition/_partition_mapper_error.ts";
 * import assert from "node:assert/strict";
 * const err = new PartitionAttachError(new PartitionMapperError("pin", new Error("EPERM")));
 * assert.equal(err.message, "failed to attach partition to memory manager");
 * assert.equal(err.cause.message, "failed to pin range to partition");
 * // failed to attach partition to memory manager / failed to pin range to partition
 * ```
 */
export class PartitionAttachError extends Error {
  /** Always `partitionMapper` (the only way attaching fails in this design). */
  readonly kind: "partitionMapper" = "partitionMapper";
  /**
   * The mapping failure: an error whose message is `failed to map range to
   * partition` or `failed to pin range to partition`, itself caused by the
   * partition's error.
   */
  override readonly cause: Error;

  /**
   * Wraps `cause`.
   *
   * @param cause The partition mapping failure.
   */
  constructor(cause: Error) {
    super("failed to attach partition to memory manager", { cause });
    this.name = "PartitionAttachError";
    this.cause = cause;
  }
}
