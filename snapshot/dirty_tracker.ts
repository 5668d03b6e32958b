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

/**
 * A new point in the making (internal, for snapshots), from
 * {@linkcode beginPoint}: the logs are read up to now, and what changed
 * since the old point set aside; exactly one of `commit` or `abort` follows.
 */
export interface PendingPoint {
  /** The pages written since the old point (read-only until `commit` or `abort`). */
  readonly dirty: PageBitmap;
  /** Makes the new point the tracker's (no system call: cannot fail). */
  commit(): void;
  /**
   * Keeps the old point: `dirty` comes back, with every page of `written`
   * added (what the failed operation may have written around the logs).
   */
  abort(written?: readonly MemoryRange[]): void;
}

let construct: (host: DirtyTrackerHost) => DirtyTracker;
let beginOf: (tracker: DirtyTracker) => PendingPoint | undefined;
let attached: (tracker: DirtyTracker, partition: Partition) => void;
let detached: (tracker: DirtyTracker, partition: Partition) => void;

/** Makes the tracker of a manager (internal: its constructor is private). */
export function newDirtyTracker(host: DirtyTrackerHost): DirtyTracker {
  return construct(host);
}

/**
 * Begins a new point of `tracker` (`undefined` when it is off): reads the
 * logs, then sets aside everything written since the old point, by guests
 * and the host, by page number. For snapshots, whose point must move only
 * once their copy succeeded.
 *
 * @throws {SnapshotError} `tracking` (`read`) when a partition's log cannot
 *   be read; nothing is lost (as for `dirtyPages`).
 */
export function beginPoint(tracker: DirtyTracker): PendingPoint | undefined {
  return beginOf(tracker);
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

/** The last point number given out, by any tracker of this thread. */
let lastPointNumber = 0;

function newPointNumber(): number {
  return ++lastPointNumber;
}

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
  /** The other bitmap of a pending point, kept to be reused (its chunks stay allocated). */
  #spare = new PageBitmap();
  #tracking = false;
  #point = 0;

  static {
    construct = (host) => new DirtyTracker(host);
    beginOf = (tracker) => tracker.#begin();
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
   * point it made, for its incremental restore). 0 before the first start;
   * then unique among the trackers of this thread, so that a snapshot of
   * one manager never matches another manager's point.
   */
  get point(): number {
    return this.#point;
  }

  /**
   * Turns tracking on (partitions' dirty logging, then the host bitmap) and
   * makes a new point. Host writes that start after this returns are
   * tracked (it waits for Worker accesses under way). No-op when on.
   *
   * @throws {SnapshotError} `tracking` (`start`; cause: the partition's
   *   error, or the readers' grace period's); nothing changes: the
   *   partitions started so far are stopped again, tracking stays off and
   *   the point stays.
   * @throws {DisposedError} once the manager is disposed.
   */
  start(): void {
    this.#checkLive();
    if (this.#tracking) return;
    const started: Partition[] = [];
    const log = this.#host.va.dirtyLog;
    try {
      for (const partition of this.#host.partitions()) {
        if (partition.startDirtyLogging === undefined) continue;
        partition.startDirtyLogging();
        started.push(partition);
        // What the partition kept from an earlier session is not ours.
        partition.takeDirtyLog?.(ignore);
      }
      log.clear();
      log.setTracking(true);
      this.#host.va.synchronizeReaders();
    } catch (cause) {
      log.setTracking(false);
      for (const partition of started.reverse()) {
        try {
          partition.stopDirtyLogging?.();
        } catch (err) {
          warn("failed to stop the dirty logging of a partition", err);
        }
      }
      throw new SnapshotError({ kind: "tracking", step: "start" }, { cause });
    }
    this.#collected.clear();
    this.#tracking = true;
    this.#point = newPointNumber();
  }

  /**
   * Turns tracking off (partitions' dirty logging, then the host bitmap),
   * keeping what changed until now for {@linkcode DirtyTracker.dirtyPages}.
   * No-op when off.
   *
   * @throws {SnapshotError} `tracking` (`read` when a partition's log
   *   cannot be read, `stop` when a partition cannot stop); nothing changes
   *   then: tracking stays on (the partitions stopped so far log again),
   *   with every page written so far still reported.
   * @throws {DisposedError} once the manager is disposed.
   */
  stop(): void {
    this.#checkLive();
    if (!this.#tracking) return;
    this.#collect();
    const stopped: Partition[] = [];
    const log = this.#host.va.dirtyLog;
    try {
      for (const partition of this.#host.partitions()) {
        if (partition.stopDirtyLogging === undefined) continue;
        partition.stopDirtyLogging();
        stopped.push(partition);
        partition.takeDirtyLog?.((gpa, words, pages) => this.#add(gpa, words, pages));
      }
      log.setTracking(false);
      this.#host.va.synchronizeReaders();
    } catch (cause) {
      log.setTracking(true);
      for (const partition of stopped.reverse()) {
        try {
          partition.startDirtyLogging?.();
        } catch (err) {
          warn("failed to restart the dirty logging of a partition after a failed stop", err);
        }
      }
      throw new SnapshotError({ kind: "tracking", step: "stop" }, { cause });
    }
    log.drainInto(this.#collected);
    this.#tracking = false;
  }

  /**
   * Makes a new point: forgets what changed so far (the logs are read and
   * cleared first, so nothing written before comes back later).
   *
   * @throws {SnapshotError} `tracking` (`read`) when a partition's log
   *   cannot be read; nothing is lost then, and the point stays (as for
   *   {@linkcode DirtyTracker.dirtyPages}).
   * @throws {DisposedError} once the manager is disposed.
   */
  reset(): void {
    this.#checkLive();
    this.#collect();
    this.#collected.clear();
    this.#point = newPointNumber();
  }

  /**
   * The pages of `range` (default: all guest memory) written since the
   * point, by a guest or the host: their guest physical addresses,
   * ascending, one per 4 KiB page touched.
   *
   * @param range Where to look (pages partly inside count).
   * @returns The page addresses.
   * @throws {SnapshotError} `tracking` (`read`) when a partition's log
   *   cannot be read. Nothing is lost: the logs read before the failure are
   *   kept by the tracker, the one that failed keeps its bits in the kernel
   *   (and the host bitmap is not drained), so the next call that succeeds
   *   reports every page written since the point.
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

  #begin(): PendingPoint | undefined {
    if (!this.#tracking) return undefined;
    const dirty = this.#collect();
    const fresh = this.#spare;
    fresh.clear();
    this.#collected = fresh;
    this.#spare = dirty;
    let open = true;
    return {
      dirty,
      commit: () => {
        if (!open) return;
        open = false;
        this.#point = newPointNumber();
      },
      abort: (written = []) => {
        if (!open) return;
        open = false;
        for (const range of written) {
          const first = Number(range.start / PAGE_SIZE);
          dirty.setRange(first, Number((range.end + PAGE_SIZE - 1n) / PAGE_SIZE) - first);
        }
        dirty.orBitmap(fresh);
        this.#collected = dirty;
        this.#spare = fresh;
      },
    };
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
