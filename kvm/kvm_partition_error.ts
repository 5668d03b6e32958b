import { hex } from "../layout/_hex.ts";

/**
 * A KVM partition operation failed, or KVM lacks something the partition
 * needs. `kind` says which rule or step (`detail` holds the values the
 * message shows); an OS failure (a SyscallError such as
 * `ioctl(KVM_SET_USER_MEMORY_REGION)`) is the `cause`.
 *
 * Messages:
 * - `invalidRange`: `invalid memory slot {size} bytes at {gpa} from host {hostAddress}`
 * - `overlap`: `range {range} overlaps memory slot {slot} at {slotRange}`
 *   (slot -1: `... overlaps the range mapped in this batch at {slotRange}`)
 * - `slotsExhausted`: `no free memory slot: all {maxSlots} slots are in use`
 * - `partialUnmap`: `cannot unmap {range}: memory slot {slot} at {slotRange} is only partly inside`
 *   (slot -1 as for `overlap`; a merged slot may be cut where its ranges join)
 * - `map`, `unmap`: `failed to create memory slot {slot} at {range}`, `failed to delete memory slot {slot} at {range}`
 * - `prefetch`, `pin`: `failed to prefetch {range} of memory slot {slot}`, `failed to pin ...`
 * - `dirtyLog`: `failed to log dirty pages of memory slot {slot} at {range}` (slot -1: enabling manual protect)
 * - `missingCapability`: `kvm does not support {what} ({capability})`
 * - `unsupportedApiVersion`: `unsupported kvm api version {version} (expected 12)`
 *
 * @example
 * ```ts
 * import { KvmPartition, KvmPartitionError } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * using partition = KvmPartition.create();
 * assert.throws(() => partition.mapRange(0x1000n, 0x800n, 0n, true, false), {
 *   name: "KvmPartitionError",
 *   kind: "invalidRange",
 *   message: "invalid memory slot 0x800 bytes at 0x0 from host 0x1000",
 * });
 * const full = new KvmPartitionError({ kind: "slotsExhausted", maxSlots: 509 });
 * assert.equal(full.message, "no free memory slot: all 509 slots are in use");
 * ```
 */
export class KvmPartitionError extends Error {
  /** The failed rule or step. */
  readonly kind: KvmPartitionError["detail"]["kind"];
  /** The case, with the values its message shows (ranges as `[start, end)` guest addresses). */
  readonly detail:
    | {
      readonly kind: "invalidRange";
      readonly gpa: bigint;
      readonly size: bigint;
      readonly hostAddress: bigint;
    }
    | {
      readonly kind: "overlap" | "partialUnmap";
      readonly start: bigint;
      readonly end: bigint;
      readonly slot: number;
      readonly slotStart: bigint;
      readonly slotEnd: bigint;
    }
    | { readonly kind: "slotsExhausted"; readonly maxSlots: number }
    | {
      readonly kind: "map" | "unmap" | "prefetch" | "pin" | "dirtyLog";
      readonly slot: number;
      readonly start: bigint;
      readonly end: bigint;
    }
    | { readonly kind: "missingCapability"; readonly capability: string; readonly what: string }
    | { readonly kind: "unsupportedApiVersion"; readonly version: number };

  /**
   * Creates the error for `detail`.
   *
   * @param detail The case and its values.
   * @param options `cause`: the OS error, where one failed.
   */
  constructor(detail: KvmPartitionError["detail"], options?: ErrorOptions) {
    super(describe(detail), options);
    this.name = "KvmPartitionError";
    this.kind = detail.kind;
    this.detail = detail;
  }
}

function span(start: bigint, end: bigint): string {
  return `${hex(start)}-${hex(end)}`;
}

/** `memory slot N`, or for slot -1 a range mapped in the open batch (no slot yet). */
function slotName(slot: number): string {
  return slot < 0 ? "the range mapped in this batch" : `memory slot ${slot}`;
}

function describe(d: KvmPartitionError["detail"]): string {
  switch (d.kind) {
    case "invalidRange":
      return `invalid memory slot ${hex(d.size)} bytes at ${hex(d.gpa)} from host ${
        hex(d.hostAddress)
      }`;
    case "overlap":
      return `range ${span(d.start, d.end)} overlaps ${slotName(d.slot)} at ${
        span(d.slotStart, d.slotEnd)
      }`;
    case "partialUnmap":
      return `cannot unmap ${span(d.start, d.end)}: ${slotName(d.slot)} at ${
        span(d.slotStart, d.slotEnd)
      } is only partly inside`;
    case "slotsExhausted":
      return `no free memory slot: all ${d.maxSlots} slots are in use`;
    case "map":
      return `failed to create memory slot ${d.slot} at ${span(d.start, d.end)}`;
    case "unmap":
      return `failed to delete memory slot ${d.slot} at ${span(d.start, d.end)}`;
    case "prefetch":
      return `failed to prefetch ${span(d.start, d.end)} of memory slot ${d.slot}`;
    case "pin":
      return `failed to pin ${span(d.start, d.end)} of memory slot ${d.slot}`;
    case "dirtyLog":
      return d.slot < 0
        ? "failed to enable manual dirty log protection (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)"
        : `failed to log dirty pages of memory slot ${d.slot} at ${span(d.start, d.end)}`;
    case "missingCapability":
      return `kvm does not support ${d.what} (${d.capability})`;
    case "unsupportedApiVersion":
      return `unsupported kvm api version ${d.version} (expected 12)`;
  }
}
