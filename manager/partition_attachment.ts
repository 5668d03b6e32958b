import type { Partition } from "../partition/partition.ts";
import type { Vtl } from "./vtl.ts";

let construct: (partition: Partition, vtl: Vtl, detach: () => void) => PartitionAttachment;

/** Makes a {@linkcode PartitionAttachment} (internal: its constructor is private). */
export function newPartitionAttachment(
  partition: Partition,
  vtl: Vtl,
  detach: () => void,
): PartitionAttachment {
  return construct(partition, vtl, detach);
}

/**
 * A partition attached to a guest memory manager. Disposing of it detaches
 * the partition: every region the manager had mapped into it (including the
 * VTL0 alias map) is unmapped, and later changes no longer reach it.
 * Detaching twice, or after the manager is gone, does nothing.
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, MemoryLayout, Vtl } from "../mod.ts";
 * import { RecordingPartition } from "../testing.ts";
 * import assert from "node:assert/strict";
 *
 * using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(1n << 20n, []));
 * const partition = new RecordingPartition();
 * {
 *   using attachment = manager.attachPartition(Vtl.Vtl0, partition);
 *   assert.equal(attachment.isAttached, true);
 *   assert.equal(partition.mappings().length, 1);
 * }
 * assert.equal(partition.mappings().length, 0); // detached at the end of the block
 * ```
 */
export class PartitionAttachment implements Disposable {
  /** The attached partition. */
  readonly partition: Partition;
  /** The VTL it was attached for. */
  readonly vtl: Vtl;
  #detach: (() => void) | undefined;

  static {
    construct = (partition, vtl, detach) => new PartitionAttachment(partition, vtl, detach);
  }

  private constructor(partition: Partition, vtl: Vtl, detach: () => void) {
    this.partition = partition;
    this.vtl = vtl;
    this.#detach = detach;
  }

  /** Whether the partition is still attached. */
  get isAttached(): boolean {
    return this.#detach !== undefined;
  }

  /**
   * Detaches the partition; idempotent. When the partition fails to unmap
   * a region, it stays attached as before and the error (a `RegionError`,
   * `partitionUnmap`) is thrown.
   */
  detach(): void {
    const detach = this.#detach;
    if (detach === undefined) return;
    detach();
    this.#detach = undefined;
  }

  /** Detaches the partition. */
  [Symbol.dispose](): void {
    this.detach();
  }
}
