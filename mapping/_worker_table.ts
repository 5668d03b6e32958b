/**
 * A Worker's view of a manager's host mapping table: the same
 * {@linkcode VaEntry} objects `GuestMemory` uses on the main thread, built
 * from the table the manager shares ({@linkcode SharedTableReader}) over
 * the same host reservation (host address = base + gpa).
 *
 * @module
 */

import { MemoryRange } from "../layout/memory_range.ts";
import { HostDirtyLog } from "./_host_dirty_log.ts";
import { FLAG_WRITABLE, SharedTableReader } from "./_shared_table.ts";
import { VaEntry } from "./_va_mapper.ts";

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
  /** The last entry found, and the sequence number it belongs to. */
  #last: VaEntry | undefined;
  #lastSequence = -1;
  readonly dirtyLog: HostDirtyLog;

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
    return this.reader.sequence;
  }

  find(address: number): VaEntry | undefined {
    const last = this.#last;
    const { entry, sequence } = this.reader.find(address);
    if (entry === undefined) return undefined;
    if (
      last !== undefined && sequence === this.#lastSequence && last.startNumber === entry.start &&
      last.endNumber === entry.end
    ) {
      return last;
    }
    const range = new MemoryRange(BigInt(entry.start), BigInt(entry.end));
    const writable = (entry.flags & FLAG_WRITABLE) !== 0;
    const found = new VaEntry(range, writable, "shared", -1, 0n, this.base + range.start);
    this.#last = found;
    this.#lastSequence = sequence;
    return found;
  }
}
