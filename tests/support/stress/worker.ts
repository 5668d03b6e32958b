/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * A Worker of the guest memory stress test: hammers reads, writes, fills
 * and compareExchange32 over the addresses it is given through a shared
 * client, checking every value against what the model allows, until the
 * manager is disposed. Posts its counters when done.
 *
 * @module
 */

import { GuestMemoryClient, GuestMemoryError } from "../../../mod.ts";

/** What the main script sends. */
export interface StressJob {
  readonly share: unknown;
  readonly id: number;
  readonly seed: number;
  /** Word-aligned guest ranges to hammer: `[start, end)` as numbers. */
  readonly ranges: readonly (readonly [number, number])[];
  /** Values a word may hold before any worker wrote it, by backing (see `initialWord`). */
  readonly tags: readonly number[];
}

/** What a worker reports. */
export interface StressReport {
  readonly id: number;
  readonly ok: number;
  readonly refused: Record<string, number>;
  readonly bad: string[];
}

/** The top nibbles a word may have: the backings' tags (1, 2) and the writers' stamps. */
const TOP_NIBBLES = [1, 2, 0x8, 0x9];

/** Worker `id` writes words whose high nibble is `WRITER_TAG + id` and whose low bits count up. */
export const WRITER_TAG = 0x8;

/** Whether `value` is one the model allows at offset `offset` of a backing. */
export function allowed(value: number, offset: number, tags: readonly number[]): boolean {
  const top = value >>> 28;
  if (top === WRITER_TAG || top === WRITER_TAG + 1) return true; // some worker's stamp
  // Otherwise it must be a backing's initial pattern for that offset.
  return tags.some((tag) => value === initialWord(tag, offset));
}

/** The initial pattern of backing `tag` at byte offset `offset` (never 0, never a writer stamp). */
export function initialWord(tag: number, offset: number): number {
  return ((tag << 28) | ((offset >>> 2) & 0x0fffffff)) >>> 0;
}

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x1_0000_0000;
  };
}

self.onmessage = (event: MessageEvent<StressJob>) => {
  const job = event.data;
  const memory = GuestMemoryClient.fromShare(job.share, { name: `stress worker ${job.id}` })
    .guestMemory();
  const random = rng(job.seed);
  const refused: Record<string, number> = {};
  const bad: string[] = [];
  let ok = 0;
  let seq = 0;
  let disposedSeen = 0;
  const buffer = new Uint8Array(64);
  const view = new DataView(buffer.buffer);
  const stamp = () => (((WRITER_TAG + job.id) << 28) | (++seq & 0x0fffffff)) >>> 0;
  // Offsets are checked against the pattern of whichever backing shows
  // there: RAM patterns are by guest address, device patterns by offset in
  // the device region, so both are passed as candidates.
  const check = (gpa: number, value: number, where: string) => {
    if (!allowed(value, gpa, job.tags) && !allowed(value, gpa & 0xffff, job.tags)) {
      bad.push(`${where} at 0x${gpa.toString(16)} read 0x${value.toString(16)}`);
    }
  };
  for (;;) {
    const [start, end] = job.ranges[Math.floor(random() * job.ranges.length)];
    const words = (end - start) >>> 2;
    const gpa = start + 4 * Math.floor(random() * words);
    const op = Math.floor(random() * 6);
    try {
      switch (op) {
        case 0:
          check(gpa, memory.readU32(gpa), "readU32");
          break;
        case 1:
          memory.writeU32(gpa, stamp());
          break;
        case 2: {
          const room = Math.min(buffer.length, end - gpa);
          const chunk = buffer.subarray(0, room);
          memory.read(gpa, chunk);
          // A bulk read copies byte by byte or as memcpy does, so a word the
          // other worker is writing meanwhile may come back torn between two
          // allowed values: only its top byte, written whole, is checked. A
          // word of memory the guest no longer sees (zeros) still fails.
          for (let o = 0; o + 4 <= room; o += 4) {
            const value = view.getUint32(o, true);
            if (!TOP_NIBBLES.includes(value >>> 28)) {
              bad.push(`read at 0x${(gpa + o).toString(16)} read 0x${value.toString(16)}`);
            }
          }
          break;
        }
        case 3: {
          const value = stamp();
          const len = Math.min(16, end - gpa);
          for (let o = 0; o < len; o += 4) view.setUint32(o, value, true);
          memory.write(gpa, buffer.subarray(0, len));
          break;
        }
        case 4: {
          const seen = memory.compareExchange32(gpa, 0, 0);
          check(gpa, seen, "compareExchange32");
          memory.compareExchange32(gpa, seen, stamp());
          break;
        }
        case 5:
          // Every byte the same: a word of it is this worker's stamp form.
          memory.fill(gpa, Math.min(16, end - gpa), (WRITER_TAG + job.id) * 0x11);
          break;
      }
      ok++;
    } catch (error) {
      if (!(error instanceof GuestMemoryError)) {
        bad.push(`op ${op} at 0x${gpa.toString(16)} threw ${String(error)}`);
        break;
      }
      refused[error.kind] = (refused[error.kind] ?? 0) + 1;
      if (error.kind === "disposed" && ++disposedSeen >= 1000) break;
    }
    if (bad.length > 20) break;
  }
  memory[Symbol.dispose]();
  self.postMessage({ id: job.id, ok, refused, bad } satisfies StressReport);
};
