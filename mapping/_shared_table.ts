/**
 * The host mapping table shared with Workers, and the grace period that
 * keeps their accesses safe while the manager changes it.
 *
 * One `SharedArrayBuffer` holds:
 * - a header: the table's sequence number (odd while the manager rewrites
 *   part of the table: a seqlock), the disposed flag and the table size;
 * - one slot per reader (a Worker's `GuestMemory`): who owns it, a counter
 *   that is odd while the reader is inside an access, and a name for
 *   warnings;
 * - the table itself, shaped like the manager's own chunked sorted list so
 *   that a change rewrites one chunk, not the table: a directory of chunks
 *   in address order (`[last end, slot]`), and chunk slots of up to 128
 *   `[start, end, flags]` entries, as float64 (guest addresses in the
 *   reservation are below 2^47).
 *
 * The protocol (the model is Linux's SRCU and OpenVMM's minircu):
 * - A reader announces an access by making its counter odd, then reads the
 *   sequence number and, if the table changed since it last looked, looks
 *   the address up in the shared table (two binary searches, retried while
 *   the sequence number moves), checks the access, touches memory, and
 *   makes its counter even again.
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
import type { ChunkedSortedList } from "../collections/_chunked_sorted_list.ts";
import { lowerBoundIndex } from "../collections/_lower_bound.ts";
import { membarrier, registerMembarrier } from "../ffi/_system.ts";

/** Readers (Workers' `GuestMemory` objects) one manager can serve at once. */
export const MAX_READERS = 64;
/** Bytes of a reader's name kept for warnings. */
const NAME_BYTES = 48;

// Header words (Int32).
const SEQ = 0;
const DISPOSED = 1;
/** Live ranges in the table. */
const LENGTH = 2;
/** 1 when the manager fences readers with `membarrier`, so their counter updates can be plain stores. */
const FENCED = 3;
/** Chunks in the directory. */
const DIR_COUNT = 4;
const HEADER_WORDS = 8;

// Reader slots (Int32): owner word and counter word per slot.
const OWNER_BASE = HEADER_WORDS;
const COUNTER_BASE = OWNER_BASE + MAX_READERS;
const INT_WORDS = COUNTER_BASE + MAX_READERS;
const NAMES_OFFSET = INT_WORDS * 4;
/** The chunk directory: `[last end, slot]` float64 pairs. */
const DIR_OFFSET = align8(NAMES_OFFSET + MAX_READERS * NAME_BYTES);
const DIR_CAPACITY = 1 << 16;
/** Chunk slots: `[count, (start, end, flags) x CHUNK_CAPACITY]` float64s each. */
const SLOTS_OFFSET = DIR_OFFSET + DIR_CAPACITY * 16;
/**
 * The chunked list's chunks hold at most 64 items between operations
 * (`MAX_CHUNK` in `collections/_chunked_sorted_list.ts`); a slot has room
 * for twice that.
 */
const CHUNK_CAPACITY = 128;
const SLOT_DOUBLES = 1 + 3 * CHUNK_CAPACITY;
const SLOT_BYTES = SLOT_DOUBLES * 8;
const INITIAL_SLOTS = 8;
/** At most this many chunk slots (about 8 million ranges; 200 MiB of address space, used as needed). */
const MAX_SLOTS = DIR_CAPACITY;

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
  readonly dir: Float64Array<SharedArrayBuffer>;
  /** Length-tracking: it grows with the buffer. */
  readonly slots: Float64Array<SharedArrayBuffer>;

  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.ints = new Int32Array(buffer, 0, INT_WORDS);
    this.names = new Uint8Array(buffer, NAMES_OFFSET, MAX_READERS * NAME_BYTES);
    this.dir = new Float64Array(buffer, DIR_OFFSET, DIR_CAPACITY * 2);
    this.slots = new Float64Array(buffer, SLOTS_OFFSET);
  }

  nameOf(slot: number): string {
    const raw = this.names.slice(slot * NAME_BYTES, (slot + 1) * NAME_BYTES);
    const end = raw.indexOf(0);
    return new TextDecoder().decode(end < 0 ? raw : raw.subarray(0, end));
  }
}

/** A reader's search over the shared directory and slots (reused: no allocation). */
interface SearchProbe {
  readonly dir: Float64Array<SharedArrayBuffer>;
  readonly slots: Float64Array<SharedArrayBuffer>;
  address: number;
  /** Where the searched slot starts in `slots`. */
  at: number;
}

const chunkEndsAbove = (i: number, p: SearchProbe): boolean => p.dir[2 * i] > p.address;
const entryEndsAbove = (i: number, p: SearchProbe): boolean =>
  p.slots[p.at + 2 + 3 * i] > p.address;

/** What the writer needs of a table entry. */
export interface TableEntry {
  readonly startNumber: number;
  readonly endNumber: number;
  readonly writable: boolean;
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
  /** The slot of each chunk of the mirrored list, and each chunk's place in the directory. */
  #slotOf = new Map<readonly TableEntry[], number>();
  #dirIndex = new Map<readonly TableEntry[], number>();
  readonly #freeSlots: number[] = [];
  #slotCount = 0;
  readonly #fenced: boolean;

  /** A new, empty shared table. */
  constructor(timeoutMs = DEFAULT_GRACE_TIMEOUT_MS) {
    const size = SLOTS_OFFSET + INITIAL_SLOTS * SLOT_BYTES;
    const max = SLOTS_OFFSET + MAX_SLOTS * SLOT_BYTES;
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
   * Mirrors the changes of `list` since the last call (the list must track
   * its changes: see `ChunkedSortedList.trackChanges`): each changed chunk
   * is rewritten in its slot, and the directory when chunks came or went.
   * Readers that look after this returns see the new table; readers in the
   * middle of a look-up retry.
   */
  publish<T extends TableEntry>(list: ChunkedSortedList<T>): void {
    const views = this.#views;
    const ints = views.ints;
    const { chunks: changed, reshaped } = list.takeChanges();
    const all = list.chunks();
    if (all.length > DIR_CAPACITY) {
      throw new RangeError(`cannot share more than ${DIR_CAPACITY} chunks of host mappings`);
    }
    Atomics.add(ints, SEQ, 1); // odd: being written
    try {
      // Chunks that went give their slots back (only a reshape removes chunks).
      const live: ReadonlySet<readonly TableEntry[]> | undefined = reshaped
        ? new Set(all)
        : undefined;
      if (live !== undefined) {
        for (const [chunk, slot] of this.#slotOf) {
          if (live.has(chunk)) continue;
          this.#slotOf.delete(chunk);
          this.#freeSlots.push(slot);
        }
      }
      for (const chunk of changed) {
        if (live !== undefined && !live.has(chunk)) continue;
        let slot = this.#slotOf.get(chunk);
        if (slot === undefined) {
          slot = this.#allocateSlot();
          this.#slotOf.set(chunk, slot);
        }
        this.#writeSlot(slot, chunk);
      }
      const dir = views.dir;
      if (reshaped) {
        this.#dirIndex = new Map();
        for (let i = 0; i < all.length; i++) {
          const chunk = all[i];
          this.#dirIndex.set(chunk, i);
          dir[2 * i] = chunk[chunk.length - 1].endNumber;
          dir[2 * i + 1] = this.#slotOf.get(chunk)!;
        }
      } else {
        for (const chunk of changed) {
          const i = this.#dirIndex.get(chunk)!;
          dir[2 * i] = chunk[chunk.length - 1].endNumber;
        }
      }
      Atomics.store(ints, DIR_COUNT, all.length);
      Atomics.store(ints, LENGTH, list.length);
    } finally {
      Atomics.add(ints, SEQ, 1); // even: stable
    }
  }

  #allocateSlot(): number {
    const free = this.#freeSlots.pop();
    if (free !== undefined) return free;
    const slot = this.#slotCount++;
    const views = this.#views;
    const needed = SLOTS_OFFSET + (slot + 1) * SLOT_BYTES;
    if (needed > views.buffer.byteLength) {
      const max = SLOTS_OFFSET + MAX_SLOTS * SLOT_BYTES;
      views.buffer.grow(Math.min(max, Math.max(needed, 2 * views.buffer.byteLength)));
    }
    return slot;
  }

  #writeSlot(slot: number, chunk: readonly TableEntry[]): void {
    const slots = this.#views.slots;
    const at = slot * SLOT_DOUBLES;
    slots[at] = chunk.length;
    for (let i = 0; i < chunk.length; i++) {
      const e = chunk[i];
      slots[at + 1 + 3 * i] = e.startNumber;
      slots[at + 2 + 3 * i] = e.endNumber;
      slots[at + 3 + 3 * i] = e.writable ? FLAG_WRITABLE : 0;
    }
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
  /** Where `enter`/`exit` write the slot's counter: the shared words, or a dummy once released. */
  #counters: Int32Array<ArrayBufferLike>;
  readonly #probe: SearchProbe;

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
    this.#counters = ints;
    this.#index = COUNTER_BASE + slot;
    this.#fenced = Atomics.load(ints, FENCED) === 1;
    this.#probe = { dir: views.dir, slots: views.slots, address: 0, at: 0 };
    this.#counter = Atomics.load(ints, COUNTER_BASE + slot);
    if ((this.#counter & 1) !== 0) this.#counter++;
  }

  /** Announces an access (call before looking at the table; nests). */
  enter(): void {
    if (this.#depth++ === 0) {
      if (this.#fenced) this.#counters[this.#index] = ++this.#counter;
      else Atomics.store(this.#counters, this.#index, ++this.#counter);
    }
  }

  /** Ends the access announced by {@linkcode enter}. */
  exit(): void {
    if (--this.#depth === 0) {
      if (this.#fenced) this.#counters[this.#index] = ++this.#counter;
      else Atomics.store(this.#counters, this.#index, ++this.#counter);
    }
  }

  /** The table's current sequence number (changes whenever the table does). */
  get sequence(): number {
    // Fenced readers read it plainly, as they store their counter: the
    // manager's membarrier orders both (and the store to the same typed
    // array between two reads keeps V8 from reusing an earlier read).
    return this.#fenced ? this.#ints[SEQ] : Atomics.load(this.#ints, SEQ);
  }

  /** Whether the manager has been disposed. */
  get disposed(): boolean {
    return Atomics.load(this.#views.ints, DISPOSED) !== 0;
  }

  /**
   * The live range containing guest address `address` in the table as it
   * is now, with the sequence number it was read at (call between
   * {@linkcode enter} and {@linkcode exit}): a binary search of the chunk
   * directory, then of one chunk, retried while the manager writes.
   */
  find(address: number): { readonly entry: SharedEntry | undefined; readonly sequence: number } {
    const ints = this.#ints;
    const slots = this.#views.slots;
    for (;;) {
      const before = Atomics.load(ints, SEQ);
      if ((before & 1) !== 0) continue; // the manager is writing
      const count = ints[DIR_COUNT];
      const probe = this.#probe;
      probe.address = address;
      const lo = lowerBoundIndex(0, count, chunkEndsAbove, probe);
      let entry: SharedEntry | undefined;
      if (lo < count) {
        const at = probe.dir[2 * lo + 1] * SLOT_DOUBLES;
        const n = slots[at];
        probe.at = at;
        const a = lowerBoundIndex(0, n, entryEndsAbove, probe);
        if (a < n && slots[at + 1 + 3 * a] <= address) {
          entry = {
            start: slots[at + 1 + 3 * a],
            end: slots[at + 2 + 3 * a],
            flags: slots[at + 3 + 3 * a],
          };
        }
      }
      if (Atomics.load(ints, SEQ) === before) return { entry, sequence: before };
    }
  }

  /** Gives the slot back (the reader must not be inside an access). */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    // Later announcements (a disposed accessor still fails through here)
    // land in words of our own: the slot may already belong to another reader.
    this.#counters = new Int32Array(INT_WORDS);
    Atomics.store(this.#views.ints, OWNER_BASE + this.#slot, 0);
  }
}
