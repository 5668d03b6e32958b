/**
 * What the demo uses to look at guest memory: a real KVM guest
 * ({@linkcode GuestProbe}) or, without KVM, an answer worked out from the
 * recording partition's map and the host reservation.
 *
 * @module
 */
import type { GuestMemory } from "../mod.ts";
import type { GuestProbe, ProbeResult, ProbeSize, RecordingPartition } from "../testing.ts";

/** One guest access at a time, as the guest would see it. */
export interface Prober {
  /** `"kvm"`: a vCPU ran the access; `"recording"`: derived from the partition map. */
  readonly kind: "kvm" | "recording";
  /** A load of `size` bytes at `gpa`. */
  load(gpa: bigint, size: ProbeSize): ProbeResult;
  /** A store of the low `size` bytes of `value` at `gpa`. */
  store(gpa: bigint, size: ProbeSize, value: number): ProbeResult;
}

/** A prober running every access in a KVM guest. */
export class KvmProber implements Prober {
  readonly kind = "kvm" as const;
  readonly #probe: GuestProbe;

  /** Wraps `probe`. */
  constructor(probe: GuestProbe) {
    this.#probe = probe;
  }

  /** The guest loads. */
  load(gpa: bigint, size: ProbeSize): ProbeResult {
    return this.#probe.load(gpa, size);
  }

  /** The guest stores. */
  store(gpa: bigint, size: ProbeSize, value: number): ProbeResult {
    return this.#probe.store(gpa, size, value);
  }
}

function littleEndian(value: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (value >>> (8 * i)) & 0xff;
  return out;
}

/**
 * A prober without a guest: where the recording partition has no mapping
 * (or a store meets a read-only one) the answer is the MMIO exit KVM would
 * give; otherwise the access goes through the host reservation, which is
 * what the partition maps.
 */
export class RecordingProber implements Prober {
  readonly kind = "recording" as const;
  readonly #partition: RecordingPartition;
  readonly #memory: GuestMemory;

  /** Answers from `partition`'s map and `memory` (the manager's guest memory). */
  constructor(partition: RecordingPartition, memory: GuestMemory) {
    this.#partition = partition;
    this.#memory = memory;
  }

  /** What a guest load would see. */
  load(gpa: bigint, size: ProbeSize): ProbeResult {
    if (this.#partition.mappingAt(gpa) === undefined) {
      return { kind: "mmio", gpa, isWrite: false, size, data: new Uint8Array(0) };
    }
    if (!this.#memory.isMapped(gpa, size)) return { kind: "memory_fault", gpa };
    const bytes = this.#memory.readBytes(gpa, size);
    let value = 0;
    for (let i = size - 1; i >= 0; i--) value = value * 256 + bytes[i];
    return { kind: "value", value };
  }

  /** What a guest store would do (and does it, through the reservation). */
  store(gpa: bigint, size: ProbeSize, value: number): ProbeResult {
    const mapping = this.#partition.mappingAt(gpa);
    if (mapping === undefined || !mapping.writable) {
      return { kind: "mmio", gpa, isWrite: true, size, data: littleEndian(value, size) };
    }
    if (!this.#memory.isMapped(gpa, size, true)) return { kind: "memory_fault", gpa };
    this.#memory.write(gpa, littleEndian(value, size));
    return { kind: "done" };
  }
}
