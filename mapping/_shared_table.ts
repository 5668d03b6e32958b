/**
 * The host mapping table shared with Workers, and the grace period that
 * keeps their accesses safe while the manager changes it.
 *
 * One `SharedArrayBuffer` holds:
 * - a header: the table's sequence number (odd while the manager rewrites
 *   the table: a seqlock), the disposed flag and the table length;
 * - one slot per reader (a Worker's `GuestMemory`): who owns it, a counter
 *   that is odd while the reader is inside an access, and a name for
 *   warnings;
 * - the table itself: `[start, end, flags]` per live range, in address
 *   order, as float64 (guest addresses in the reservation are below 2^47).
 *
 * The protocol (the model is Linux's SRCU and OpenVMM's minircu):
 * - A reader announces an access by making its counter odd, then reads the
 *   sequence number and, if the table changed since it last looked, copies
 *   the table (retrying while the sequence number moves), checks the access
 *   against it, touches memory, and makes its counter even again.
 * - The manager, before it makes host memory inaccessible, read-only or
 *   different (munmap, `PROT_NONE`, `MAP_FIXED` over a live range), first
 *   publishes the table without that range and then waits until every
 *   counter that was odd has moved on: the grace period. Every access that
 *   could have seen the old table has then finished, and every later access
 *   sees the new one (all sequence and counter updates are `Atomics`
 *   operations, which are sequentially consistent).
 * - Announcing is cheap where the kernel has `membarrier`: readers update
 *   their counters with plain stores, and the manager, before it looks at
 *   the counters, makes every thread of the process execute a full memory
 *   barrier (`MEMBARRIER_CMD_PRIVATE_EXPEDITED`, liburcu's "memb" flavour),
 *   which orders each reader's counter store before its table read.
 *   Without it, readers use `Atomics.store`, which fences on every access.
 * - The wait is bounded. A reader still inside after the bound (a
 *   terminated or stuck Worker) is reported as a warning naming it and is
 *   considered stalled; while any reader is stalled, memory the manager
 *   takes away is replaced by inaccessible-to-the-guest but harmless
 *   anonymous memory instead of `PROT_NONE`, so the stalled access cannot
 *   fault the process. A stalled reader whose counter moves is live again.
 *
 * @module
 */

import { warn } from "../diagnostics/warnings.ts";
import { membarrier, registerMembarrier } from "../ffi/_system.ts";

/** Readers (Workers' `GuestMemory` objects) one manager can serve at once. */
export const MAX_READERS = 64;
/** Bytes of a reader's name kept for warnings. */
const NAME_BYTES = 48;

// Header words (Int32).
const SEQ = 0;
const DISPOSED = 1;
const LENGTH = 2;
/** 1 when the manager fences readers with `membarrier`, so their counter updates can be plain stores. */
const FENCED = 3;
const HEADER_WORDS = 4;

// Reader slots (Int32): owner word and counter word per slot.
const OWNER_BASE = HEADER_WORDS;
const COUNTER_BASE = OWNER_BASE + MAX_READERS;
const INT_WORDS = COUNTER_BASE + MAX_READERS;
const NAMES_OFFSET = INT_WORDS * 4;
const TABLE_OFFSET = align8(NAMES_OFFSET + MAX_READERS * NAME_BYTES);
const ENTRY_DOUBLES = 3;
const ENTRY_BYTES = ENTRY_DOUBLES * 8;
const INITIAL_ENTRIES = 256;
/** At most this many live ranges can be shared (24 MiB of table). */
const MAX_ENTRIES = 1 << 20;

/** Entry flag: the host may write through the range. */
export const FLAG_WRITABLE = 1;

function align8(n: number): number {
  return (n + 7) & ~7;
}

/** One live range as the table holds it. */
export interface SharedEntry {
  /** First guest physical address. */
  readonly start: number;
  /** One past the last. */
  readonly end: number;
  /** {@linkcode FLAG_WRITABLE} or 0. */
  readonly flags: number;
}

/** How long the manager waits for a reader inside an access, by default. */
export const DEFAULT_GRACE_TIMEOUT_MS = 500;

/** What the grace periods have done so far (for tests and benchmarks). */
export interface GraceStats {
  /** Grace periods run (one per change that took memory away while readers existed). */
  readonly periods: number;
  /** Of those, how many found a reader inside an access and had to wait. */
  readonly waited: number;
  /** Readers given up on after the bound. */
  readonly stalled: number;
}

/** Views of the shared buffer, made the same way on both sides. */
class Views {
  readonly buffer: SharedArrayBuffer;
  readonly ints: Int32Array<SharedArrayBuffer>;
  readonly names: Uint8Array<SharedArrayBuffer>;
  table: Float64Array<SharedArrayBuffer>;

  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.ints = new Int32Array(buffer, 0, INT_WORDS);
    this.names = new Uint8Array(buffer, NAMES_OFFSET, MAX_READERS * NAME_BYTES);
    this.table = new Float64Array(buffer, TABLE_OFFSET);
  }

  /** The table view again if the buffer grew (growable buffers keep their views fixed-length here). */
  refreshTable(): Float64Array<SharedArrayBuffer> {
    if (this.table.byteOffset + this.table.byteLength !== this.buffer.byteLength) {
      this.table = new Float64Array(this.buffer, TABLE_OFFSET);
    }
    return this.table;
  }

  nameOf(slot: number): string {
    const raw = this.names.slice(slot * NAME_BYTES, (slot + 1) * NAME_BYTES);
    const end = raw.indexOf(0);
    return new TextDecoder().decode(end < 0 ? raw : raw.subarray(0, end));
  }
}

/**
 * The manager's side: publishes the table and runs grace periods. Made on
 * the first `share()` of a client; until then nothing is shared and
 * nothing waits.
 */
export class SharedTableWriter {
  readonly #views: Views;
  readonly #timeoutMs: number;
  /** Slot -> the odd counter value it was stalled at. */
  readonly #stalled = new Map<number, number>();
  #periods = 0;
  #waited = 0;
  #stalledTotal = 0;
  #waitCell = new Int32Array(new SharedArrayBuffer(4));
  readonly #fenced: boolean;

  /** A new, empty shared table. */
  constructor(timeoutMs = DEFAULT_GRACE_TIMEOUT_MS) {
    const size = TABLE_OFFSET + INITIAL_ENTRIES * ENTRY_BYTES;
    const max = TABLE_OFFSET + MAX_ENTRIES * ENTRY_BYTES;
    const buffer = new SharedArrayBuffer(size, { maxByteLength: max });
    this.#views = new Views(buffer);
    this.#timeoutMs = timeoutMs;
    this.#fenced = registerMembarrier();
    Atomics.store(this.#views.ints, FENCED, this.#fenced ? 1 : 0);
  }

  /** The buffer to hand to readers. */
  get buffer(): SharedArrayBuffer {
    return this.#views.buffer;
  }

  /** Counters of the grace periods run so far. */
  get stats(): GraceStats {
    return { periods: this.#periods, waited: this.#waited, stalled: this.#stalledTotal };
  }

  /** Whether some reader is stalled inside an access (memory must not become `PROT_NONE`). */
  get anyStalled(): boolean {
    this.#recheckStalled();
    return this.#stalled.size > 0;
  }

  /** Whether any reader slot is claimed. */
  get hasReaders(): boolean {
    const ints = this.#views.ints;
    for (let i = 0; i < MAX_READERS; i++) {
      if (Atomics.load(ints, OWNER_BASE + i) !== 0) return true;
    }
    return false;
  }

  /**
   * Writes the table (the live ranges in address order). Readers that look
   * after this returns see it; readers mid-copy retry.
   */
  publish(entries: readonly SharedEntry[]): void {
    const views = this.#views;
    const needed = TABLE_OFFSET + entries.length * ENTRY_BYTES;
    if (entries.length > MAX_ENTRIES) {
      throw new RangeError(`cannot share more than ${MAX_ENTRIES} host mappings`);
    }
    if (needed > views.buffer.byteLength) {
      const grown = Math.min(
        TABLE_OFFSET + MAX_ENTRIES * ENTRY_BYTES,
        Math.max(needed, 2 * views.buffer.byteLength),
      );
      views.buffer.grow(grown);
    }
    const table = views.refreshTable();
    const ints = views.ints;
    Atomics.add(ints, SEQ, 1); // odd: being written
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      table[i * ENTRY_DOUBLES] = e.start;
      table[i * ENTRY_DOUBLES + 1] = e.end;
      table[i * ENTRY_DOUBLES + 2] = e.flags;
    }
    Atomics.store(ints, LENGTH, entries.length);
    Atomics.add(ints, SEQ, 1); // even: stable
  }

  /** Marks the table disposed: every later reader access fails with `disposed`. */
  markDisposed(): void {
    const ints = this.#views.ints;
    Atomics.store(ints, DISPOSED, 1);
    Atomics.add(ints, SEQ, 2);
  }

  /**
   * The grace period: returns once every reader that was inside an access
   * when it was called has left it, or once the bound has passed (those
   * still inside are warned about and considered stalled). Returns whether
   * every reader left in time.
   */
  synchronize(): boolean {
    const ints = this.#views.ints;
    this.#periods++;
    // Readers' counter stores are plain: make them visible, and make every
    // reader's later table read see the table published before this.
    if (this.#fenced) membarrier();
    let pending: { slot: number; value: number }[] | undefined;
    for (let i = 0; i < MAX_READERS; i++) {
      if (Atomics.load(ints, OWNER_BASE + i) === 0) continue;
      const value = Atomics.load(ints, COUNTER_BASE + i);
      if ((value & 1) === 0) continue;
      if (this.#stalled.get(i) === value) continue; // still stuck: not waited for again
      (pending ??= []).push({ slot: i, value });
    }
    if (pending === undefined) return true;
    this.#waited++;
    const deadline = performance.now() + this.#timeoutMs;
    let spins = 0;
    for (;;) {
      pending = pending.filter((p) => Atomics.load(ints, COUNTER_BASE + p.slot) === p.value);
      if (pending.length === 0) return true;
      if (performance.now() >= deadline) break;
      // Spin briefly (an access takes nanoseconds to microseconds), then sleep in short steps.
      if (++spins > 200) Atomics.wait(this.#waitCell, 0, 0, 0.05);
    }
    for (const p of pending) {
      this.#stalled.set(p.slot, p.value);
      this.#stalledTotal++;
      warn(
        `guest memory reader ${JSON.stringify(this.#views.nameOf(p.slot))} (slot ${p.slot}) ` +
          `has been inside one access for over ${this.#timeoutMs} ms; ` +
          "memory it may touch is kept accessible to the host instead of being unmapped",
      );
    }
    return false;
  }

  #recheckStalled(): void {
    if (this.#stalled.size === 0) return;
    const ints = this.#views.ints;
    for (const [slot, value] of this.#stalled) {
      if (Atomics.load(ints, COUNTER_BASE + slot) !== value) this.#stalled.delete(slot);
    }
  }
}

/**
 * A reader's side (one Worker `GuestMemory`): claims a slot, announces its
 * accesses and keeps a local copy of the table.
 */
export class SharedTableReader {
  readonly #views: Views;
  readonly #slot: number;
  #counter: number;
  readonly #fenced: boolean;
  readonly #ints: Int32Array<SharedArrayBuffer>;
  readonly #index: number;
  #depth = 0;
  #released = false;
  /** The table as last copied, and the sequence number it was copied at. */
  #entries: SharedEntry[] = [];
  #seq = -1;

  /** Claims a reader slot in `buffer`, named `name` in the manager's warnings. */
  constructor(buffer: SharedArrayBuffer, name: string) {
    const views = new Views(buffer);
    const ints = views.ints;
    let slot = -1;
    for (let i = 0; i < MAX_READERS; i++) {
      if (Atomics.compareExchange(ints, OWNER_BASE + i, 0, 1) === 0) {
        slot = i;
        break;
      }
    }
    if (slot < 0) {
      throw new RangeError(`all ${MAX_READERS} guest memory reader slots are in use`);
    }
    const encoded = new TextEncoder().encode(name).subarray(0, NAME_BYTES - 1);
    views.names.fill(0, slot * NAME_BYTES, (slot + 1) * NAME_BYTES);
    views.names.set(encoded, slot * NAME_BYTES);
    this.#views = views;
    this.#slot = slot;
    this.#ints = ints;
    this.#index = COUNTER_BASE + slot;
    this.#fenced = Atomics.load(ints, FENCED) === 1;
    this.#counter = Atomics.load(ints, COUNTER_BASE + slot);
    if ((this.#counter & 1) !== 0) this.#counter++;
  }

  /** Announces an access (call before looking at the table; nests). */
  enter(): void {
    if (this.#depth++ === 0 && !this.#released) {
      if (this.#fenced) this.#ints[this.#index] = ++this.#counter;
      else Atomics.store(this.#ints, this.#index, ++this.#counter);
    }
  }

  /** Ends the access announced by {@linkcode enter}. */
  exit(): void {
    if (--this.#depth === 0 && !this.#released) {
      // A plain store suffices in both modes: x86 never makes a store
      // visible before the loads and stores that precede it.
      if (this.#fenced) this.#ints[this.#index] = ++this.#counter;
      else Atomics.store(this.#ints, this.#index, ++this.#counter);
    }
  }

  /** The table's current sequence number (changes whenever the table does). */
  get sequence(): number {
    return Atomics.load(this.#views.ints, SEQ);
  }

  /** Whether the manager has been disposed. */
  get disposed(): boolean {
    return Atomics.load(this.#views.ints, DISPOSED) !== 0;
  }

  /**
   * The table, copied again if it changed; `sequence` gives the sequence
   * number it belongs to. Call between {@linkcode enter} and {@linkcode exit}.
   */
  entries(): { readonly entries: readonly SharedEntry[]; readonly sequence: number } {
    const ints = this.#views.ints;
    for (;;) {
      const before = Atomics.load(ints, SEQ);
      if (before === this.#seq) return { entries: this.#entries, sequence: before };
      if ((before & 1) !== 0) continue; // the manager is writing it
      const length = Atomics.load(ints, LENGTH);
      const table = this.#views.refreshTable();
      const copy: SharedEntry[] = [];
      for (let i = 0; i < length; i++) {
        const at = i * ENTRY_DOUBLES;
        copy.push({ start: table[at], end: table[at + 1], flags: table[at + 2] });
      }
      if (Atomics.load(ints, SEQ) !== before) continue; // changed while copying
      this.#entries = copy;
      this.#seq = before;
      return { entries: copy, sequence: before };
    }
  }

  /** Gives the slot back (the reader must not be inside an access). */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    Atomics.store(this.#views.ints, OWNER_BASE + this.#slot, 0);
  }
}
