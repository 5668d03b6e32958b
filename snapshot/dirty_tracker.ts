import { PageBitmap } from "../collections/_page_bitmap.ts";
import { DisposedError } from "../diagnostics/disposed_error.ts";
import { warn } from "../diagnostics/warnings.ts";
import { type MemoryRange, PAGE_SIZE } from "../layout/memory_range.ts";
import type { VaMapper } from "../mapping/_va_mapper.ts";
import type { Partition } from "../partition/partition.ts";
import { SnapshotError } from "./snapshot_error.ts";

/** What a tracker needs from its manager (internal). */
export interface DirtyTrackerHost {
  /** The host reservation, with its host dirty log. */
  readonly va: VaMapper;
  /** The attached partitions, each once. */
  partitions(): readonly Partition[];
  /** The VTL0 alias map offset: alias slots report `gpa + offset`. */
  readonly aliasOffset: bigint | undefined;
  /** Whether the manager is gone. */
  isDisposed(): boolean;
}

let construct: (host: DirtyTrackerHost) => DirtyTracker;
let collectOf: (tracker: DirtyTracker) => PageBitmap;
let takeOf: (tracker: DirtyTracker) => PageBitmap;
let giveBackTo: (tracker: DirtyTracker, pages: PageBitmap) => void;
let attached: (tracker: DirtyTracker, partition: Partition) => void;
let detached: (tracker: DirtyTracker, partition: Partition) => void;

/** Makes the tracker of a manager (internal: its constructor is private). */
export function newDirtyTracker(host: DirtyTrackerHost): DirtyTracker {
  return construct(host);
}

/**
 * Everything written since the tracker's point, by guests and the host
 * (collected now), by page number; for snapshots' incremental restore.
 */
export function collectDirtyPages(tracker: DirtyTracker): PageBitmap {
  return collectOf(tracker);
}

/**
 * Everything written since the tracker's point (collected now), handed
 * over: the tracker makes a new point, as {@linkcode DirtyTracker.reset}
 * does, but with one harvest of the logs for both (an incremental restore
 * copies the pages back after this, so a write racing with the copy is
 * tracked for the new point). The set is the caller's until the next take.
 */
export function takeDirtyPages(tracker: DirtyTracker): PageBitmap {
  return takeOf(tracker);
}

/**
 * Marks `pages` (from {@linkcode takeDirtyPages}) dirty again for the
 * current point: an incremental restore that failed part-way gives back
 * what it took, so that the next one copies those pages again.
 */
export function giveBackDirtyPages(tracker: DirtyTracker, pages: PageBitmap): void {
  giveBackTo(tracker, pages);
}

/** The manager attached `partition`: it logs too while tracking is on. */
export function trackerPartitionAttached(tracker: DirtyTracker, partition: Partition): void {
  attached(tracker, partition);
}

/** The manager detached `partition`: what it logged is kept, then it stops logging. */
export function trackerPartitionDetached(tracker: DirtyTracker, partition: Partition): void {
  detached(tracker, partition);
}

function ignore(): void {}

/**
 * Dirty page tracking of one manager's guest memory, from
 * `GuestMemoryManager.dirtyTracker()`: which pages changed since a point
 * (the last {@linkcode DirtyTracker.start} or {@linkcode DirtyTracker.reset},
 * or the last snapshot taken or restored while tracking), whoever wrote them:
 *
 * - guests: every attached partition that can log (a `KvmPartition`: dirty
 *   logging on every writable slot, kept across slot changes such as PAM
 *   flips and moves, and across detaching);
 * - the host: every write through `GuestMemory`, on the main thread and in
 *   Workers (`write`, `fill`, the typed writes, a successful
 *   `compareExchange32/64`), marked in a shared bitmap after it lands.
 *
 * Writes made around `GuestMemory` (a `SharedMemoryBacking` of RAM, another
 * manager built on it, raw host pointers) are not seen. Pages are reported
 * by guest physical address (alias map writes at their VTL0 address).
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, MemoryLayout, MemoryRange } from "../mod.ts";
 * import assert from "node:assert/strict";
 *
 * using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(4n << 20n, []));
 * const tracker = manager.dirtyTracker();
 * const memory = manager.client().guestMemory();
 * tracker.start();
 * memory.writeU32(0x3000, 1);
 * memory.fill(0x10ffc, 8, 0xaa); // two pages
 * assert.deepEqual(tracker.dirtyPages(), [0x3000n, 0x10000n, 0x11000n]);
 * assert.deepEqual(tracker.dirtyPages(new MemoryRange(0x10000n, 0x11000n)), [0x10000n]);
 * tracker.reset();
 * assert.deepEqual(tracker.dirtyPages(), []);
 * tracker.stop();
 * ```
 */
export class DirtyTracker {
  readonly #host: DirtyTrackerHost;
  #collected = new PageBitmap();
  /** The set the last take handed over, reused (cleared) by the next one. */
  #taken = new PageBitmap();
  #tracking = false;
  #point = 0;

  static {
    construct = (host) => new DirtyTracker(host);
    collectOf = (tracker) => tracker.#collect();
    takeOf = (tracker) => tracker.#take();
    giveBackTo = (tracker, pages) => tracker.#collected.orBitmap(pages);
    attached = (tracker, partition) => tracker.#attached(partition);
    detached = (tracker, partition) => tracker.#detached(partition);
  }

  private constructor(host: DirtyTrackerHost) {
    this.#host = host;
  }

  /** Whether tracking is on. */
  get isTracking(): boolean {
    return this.#tracking;
  }

  /**
   * The current point's number: it changes at every start, reset, and
   * snapshot taken or restored while tracking (a snapshot remembers the
   * point it made, for its incremental restore).
   */
  get point(): number {
    return this.#point;
  }

  /**
   * Turns tracking on (partitions' dirty logging, then the host bitmap) and
   * makes a new point. Host writes that start after this returns are
   * tracked (it waits for Worker accesses under way). No-op when on.
   *
   * @throws {SnapshotError} `tracking` (cause: the partition's error); the
   *   partitions started so far are stopped again.
   * @throws {DisposedError} once the manager is disposed.
   */
  start(): void {
    this.#checkLive();
    if (this.#tracking) return;
    const started: Partition[] = [];
    try {
      for (const partition of this.#host.partitions()) {
        if (partition.startDirtyLogging === undefined) continue;
        partition.startDirtyLogging();
        started.push(partition);
      }
    } catch (cause) {
      for (const partition of started) {
        try {
          partition.stopDirtyLogging?.();
          partition.takeDirtyLog?.(ignore);
        } catch (err) {
          warn("failed to stop the dirty logging of a partition", err);
        }
      }
      throw new SnapshotError({ kind: "tracking", step: "start" }, { cause });
    }
    // What partitions kept from an earlier session is not ours.
    for (const partition of started) partition.takeDirtyLog?.(ignore);
    const log = this.#host.va.dirtyLog;
    log.clear();
    log.setTracking(true);
    this.#host.va.synchronizeReaders();
    this.#collected.clear();
    this.#tracking = true;
    this.#point++;
  }

  /**
   * Turns tracking off, keeping what changed until now for
   * {@linkcode DirtyTracker.dirtyPages}. No-op when off.
   *
   * @throws {SnapshotError} `tracking` when a partition cannot stop
   *   (tracking is off for the host and the others anyway).
   * @throws {DisposedError} once the manager is disposed.
   */
  stop(): void {
    this.#checkLive();
    if (!this.#tracking) return;
    this.#collect();
    const log = this.#host.va.dirtyLog;
    log.setTracking(false);
    this.#host.va.synchronizeReaders();
    log.drainInto(this.#collected);
    this.#tracking = false;
    let failure: unknown;
    for (const partition of this.#host.partitions()) {
      try {
        partition.stopDirtyLogging?.();
        partition.takeDirtyLog?.((gpa, words, pages) => this.#add(gpa, words, pages));
      } catch (cause) {
        failure ??= cause;
      }
    }
    if (failure !== undefined) {
      throw new SnapshotError({ kind: "tracking", step: "stop" }, { cause: failure });
    }
  }

  /**
   * Makes a new point: forgets what changed so far (the logs are read and
   * cleared first, so nothing written before comes back later).
   *
   * @throws {SnapshotError} `tracking` when a partition's log cannot be read.
   * @throws {DisposedError} once the manager is disposed.
   */
  reset(): void {
    this.#checkLive();
    this.#collect();
    this.#collected.clear();
    this.#point++;
  }

  /**
   * The pages of `range` (default: all guest memory) written since the
   * point, by a guest or the host: their guest physical addresses,
   * ascending, one per 4 KiB page touched.
   *
   * @param range Where to look (pages partly inside count).
   * @returns The page addresses.
   * @throws {SnapshotError} `tracking` when a partition's log cannot be read.
   * @throws {DisposedError} once the manager is disposed.
   */
  dirtyPages(range?: MemoryRange): bigint[] {
    this.#checkLive();
    const bitmap = this.#collect();
    const from = range === undefined ? 0 : Number(range.start / PAGE_SIZE);
    const to = range === undefined
      ? Number.MAX_SAFE_INTEGER
      : Number((range.end + PAGE_SIZE - 1n) / PAGE_SIZE);
    return bitmap.pages(from, to).map((page) => BigInt(page) * PAGE_SIZE);
  }

  #collect(): PageBitmap {
    if (this.#tracking) {
      try {
        for (const partition of this.#host.partitions()) {
          partition.takeDirtyLog?.((gpa, words, pages) => this.#add(gpa, words, pages));
        }
      } catch (cause) {
        throw new SnapshotError({ kind: "tracking", step: "read" }, { cause });
      }
      this.#host.va.dirtyLog.drainInto(this.#collected);
    }
    return this.#collected;
  }

  #take(): PageBitmap {
    this.#checkLive();
    const taken = this.#collect();
    const next = this.#taken;
    next.clear();
    this.#taken = taken;
    this.#collected = next;
    this.#point++;
    return taken;
  }

  #add(gpa: bigint, words: Uint32Array, pages: number): void {
    const alias = this.#host.aliasOffset;
    const at = alias !== undefined && gpa >= alias ? gpa - alias : gpa;
    this.#collected.orWords(Number(at / PAGE_SIZE), words, pages);
  }

  #attached(partition: Partition): void {
    if (!this.#tracking || partition.startDirtyLogging === undefined) return;
    try {
      partition.startDirtyLogging();
      partition.takeDirtyLog?.(ignore);
    } catch (err) {
      warn("failed to start dirty logging on a newly attached partition", err);
    }
  }

  #detached(partition: Partition): void {
    if (!this.#tracking) return;
    try {
      partition.stopDirtyLogging?.();
      partition.takeDirtyLog?.((gpa, words, pages) => this.#add(gpa, words, pages));
    } catch (err) {
      warn("failed to keep the dirty log of a detached partition", err);
    }
  }

  #checkLive(): void {
    if (this.#host.isDisposed()) throw new DisposedError({ object: "guest memory manager" });
  }
}
