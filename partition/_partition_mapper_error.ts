/**
 * Which step of mapping a range into a partition failed.
 *
 * @example
 * ```ts
 * import type { PartitionMapperErrorKind } from "./_partition_mapper_error.ts";
 * const kind: PartitionMapperErrorKind = "pin";
 * console.log(kind);
 * ```
 */
export type PartitionMapperErrorKind = "map" | "pin";

const MESSAGES: Record<PartitionMapperErrorKind, string> = {
  map: "failed to map range to partition",
  pin: "failed to pin range to partition",
};

/**
 * Mapping a region into a partition failed: `failed to map range to
 * partition` or `failed to pin range to partition`, the partition's error as
 * `cause`.
 *
 * @example
 * ```ts
 * import { PartitionMapperError } from "./_partition_mapper_error.ts";
 * const err = new PartitionMapperError("pin", new Error("EPERM"));
 * console.log(err.message); // failed to pin range to partition
 * ```
 */
export class PartitionMapperError extends Error {
  /** The failed step. */
  readonly kind: PartitionMapperErrorKind;

  /** Creates the error of `kind` caused by `cause`. */
  constructor(kind: PartitionMapperErrorKind, cause: unknown) {
    super(MESSAGES[kind], { cause });
    this.name = "PartitionMapperError";
    this.kind = kind;
  }
}
