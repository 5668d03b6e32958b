/**
 * Test doubles and oracles for code built on membacking:
 * {@linkcode RecordingPartition} remembers the memory map a VM would have
 * (for hosts without KVM and for tests), and {@linkcode GuestProbe} runs a
 * tiny KVM guest that performs one load or store at a time, so the guest
 * itself says what it sees at an address.
 *
 * @example
 * ```ts
 * import { RecordingPartition } from "./testing.ts";
 * import assert from "node:assert/strict";
 *
 * const partition = new RecordingPartition();
 * partition.mapRange(0x7f0000000000n, 0x1000n, 0n, true, true);
 * assert.equal(partition.mappingAt(0x800n)?.gpa, 0n);
 * ```
 *
 * @module
 */

export {
  type PartitionEvent,
  type RecordedMapping,
  RecordingPartition,
  type RecordingPartitionOptions,
} from "./testing/recording_partition.ts";
export {
  GuestProbe,
  type GuestProbeOptions,
  type ProbeResult,
  type ProbeSize,
} from "./testing/guest_probe.ts";
