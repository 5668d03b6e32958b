/**
 * A Worker's view of a manager's host mapping table: the same
 * {@linkcode VaEntry} objects `GuestMemory` uses on the main thread, built
 * from the table the manager shares ({@linkcode SharedTableReader}) over
 * the same host reservation (host address = base + gpa).
 *
 * @module
 */

import { lowerBound } from "../collections/_lower_bound.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { HostDirtyLog } from "./_host_dirty_log.ts";
import { FLAG_WRITABLE, type SharedEntry, SharedTableReader } from "./_shared_table.ts";
import { VaEntry } from "./_va_mapper.ts";

const endsAbove = (entry: VaEntry, address: number): boolean => entry.endNumber > address;

/** The table a `GuestMemory` checks its accesses against (a `VaMapper`, or this). */
export interface GuestMemoryTable {
  /** Bytes of guest physical address space covered. */
  readonly size: bigint;
  /** Changes whenever the table does. */
  readonly generation: number;
  /** Whether the manager is gone. */
  readonly isDisposed: boolean;
  /** Host address of guest address 0. */
  readonly base: bigint;
  /** Where writes are marked while tracking is on. */
  readonly dirtyLog: HostDirtyLog;
  /**
   * Brings the table the next {@linkcode find} calls use up to date and
   * returns the generation it belongs to.
   */
  refresh(): number;
  /** The entry containing guest address `address` (below `size`), if any. */
  find(address: number): VaEntry | undefined;
}

/** The table of a manager seen from a Worker. */
export class WorkerTable implements GuestMemoryTable {
  readonly reader: SharedTableReader;
  readonly size: bigint;
  readonly base: bigint;
  readonly dirtyLog: HostDirtyLog;
  #generation = -1;
  #shared: readonly SharedEntry[] = [];
  #entries: VaEntry[] = [];
  /** Entries by `start:end:flags`, so views survive table changes elsewhere. */
  #cache = new Map<string, VaEntry>();

  /**
   * Reads the table in `buffer` for the reservation at `base` of `size`
   * bytes, marking writes in the host dirty log `dirty` (a log of its own,
   * never on, when the share carried none).
   */
  constructor(
    buffer: SharedArrayBuffer,
    base: bigint,
    size: bigint,
    name: string,
    dirty: SharedArrayBuffer | undefined,
  ) {
    this.reader = new SharedTableReader(buffer, name);
    this.base = base;
    this.size = size;
    this.dirtyLog = dirty === undefined ? HostDirtyLog.create(0n) : new HostDirtyLog(dirty);
  }

  get generation(): number {
    return this.reader.sequence;
  }

  get isDisposed(): boolean {
    return this.reader.disposed;
  }

  refresh(): number {
    this.#generation = this.#load();
    return this.#generation;
  }

  find(address: number): VaEntry | undefined {
    const entries = this.#entries;
    const lo = lowerBound(entries, endsAbove, address);
    return lo < entries.length && entries[lo].startNumber <= address ? entries[lo] : undefined;
  }

  /** Copies the shared table if it changed; the sequence number of the copy. */
  #load(): number {
    const { entries, sequence } = this.reader.entries();
    if (entries === this.#shared) return sequence;
    const cache = new Map<string, VaEntry>();
    const built: VaEntry[] = [];
    for (const e of entries) {
      const key = `${e.start}:${e.end}:${e.flags}`;
      let entry = this.#cache.get(key);
      if (entry === undefined) {
        const range = new MemoryRange(BigInt(e.start), BigInt(e.end));
        const writable = (e.flags & FLAG_WRITABLE) !== 0;
        entry = new VaEntry(range, writable, "shared", -1, 0n, this.base + range.start);
      }
      cache.set(key, entry);
      built.push(entry);
    }
    this.#cache = cache;
    this.#shared = entries;
    this.#entries = built;
    return sequence;
  }
}
