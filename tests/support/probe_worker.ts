/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * A Worker of the two-vCPU test: runs a shared `GuestProbe` (its own vCPU)
 * in a loop of guest loads and stores over the PAM pieces it is given,
 * while the main thread flips them, and reports what the guest saw.
 *
 * @module
 */

import { GuestProbe } from "../../testing.ts";

/** What the main thread sends. */
export interface ProbeJob {
  readonly probe: unknown;
  readonly id: number;
  /** Piece starts (guest addresses) this worker probes. */
  readonly pieces: readonly number[];
  readonly milliseconds: number;
}

/** What a worker reports. */
export interface ProbeReport {
  readonly id: number;
  readonly loads: number;
  readonly stores: number;
  readonly values: number;
  readonly mmio: number;
  readonly bad: string[];
}

/** The word worker `id` stores: its tag in the top byte, a counter below. */
export function guestStamp(id: number, n: number): number {
  return ((0xa0 + id) << 24 | (n & 0xffffff)) >>> 0;
}

/** The initial word of RAM at `gpa`. */
export function initialRamWord(gpa: number): number {
  return (0x5a000000 | (gpa >>> 2)) >>> 0;
}

/** What a worker posts first, once it has its probe and starts probing. */
export interface ProbeReady {
  readonly ready: number;
}

self.onmessage = (event: MessageEvent<ProbeJob>) => {
  const job = event.data;
  using probe = GuestProbe.fromShare(job.probe);
  self.postMessage({ ready: job.id } satisfies ProbeReady);
  const end = performance.now() + job.milliseconds;
  let loads = 0;
  let stores = 0;
  let values = 0;
  let mmio = 0;
  let n = 0;
  const bad: string[] = [];
  while (performance.now() < end && bad.length < 20) {
    for (const piece of job.pieces) {
      const gpa = piece + 8 * job.id;
      const seen = probe.load(BigInt(gpa), 4);
      loads++;
      if (seen.kind === "value") {
        values++;
        const v = seen.value;
        if (v !== initialRamWord(gpa) && v >>> 24 !== 0xa0 + job.id) {
          bad.push(`load 0x${gpa.toString(16)} saw 0x${v.toString(16)}`);
        }
      } else if (seen.kind === "mmio") {
        mmio++;
        if (seen.isWrite || seen.gpa !== BigInt(gpa)) {
          bad.push(
            `load 0x${gpa.toString(16)}: ${
              JSON.stringify({ ...seen, data: [...seen.data], gpa: String(seen.gpa) })
            }`,
          );
        }
      } else {
        bad.push(`load 0x${gpa.toString(16)}: ${seen.kind}`);
      }
      const stored = probe.store(BigInt(gpa), 4, guestStamp(job.id, ++n));
      stores++;
      if (stored.kind === "mmio") mmio++;
      else if (stored.kind !== "done") bad.push(`store 0x${gpa.toString(16)}: ${stored.kind}`);
    }
  }
  self.postMessage({ id: job.id, loads, stores, values, mmio, bad } satisfies ProbeReport);
};
