import { DisposedError } from "../diagnostics/disposed_error.ts";
import { warn } from "../diagnostics/warnings.ts";
import { Fcntl, Memfd, Mman } from "../ffi/_constants.ts";
import { copyFileRange } from "../ffi/_copy_file_range.ts";
import { hostCopy, hostCopyPageRuns } from "../ffi/_host_memory.ts";
import { HostMapping } from "../ffi/_host_mapping.ts";
import { OwnedFd } from "../ffi/_owned_fd.ts";
import { MissingPermissionError } from "../ffi/missing_permission_error.ts";
import { type PageBitmap, PageRuns } from "../collections/_page_bitmap.ts";
import { MemoryRange, PAGE_SIZE } from "../layout/memory_range.ts";
import type { GuestMemoryManager } from "../manager/guest_memory_manager.ts";
import { type GuestMemoryManagerParts, managerInternals } from "../manager/guest_memory_manager.ts";
import { adoptBacking, type SharedMemoryBacking } from "../manager/shared_memory_backing.ts";
import { RamVisibility } from "../regions/ram_visibility_control.ts";
import { beginPoint, type PendingPoint } from "./dirty_tracker.ts";
import { SnapshotError } from "./snapshot_error.ts";

/**
 * One RAM region at snapshot time: where it is, where its bytes are in the
 * snapshot, and what the guest saw of it.
 *
 * @example
 * ```ts
 * import { MemoryRange, RamVisibility } from "../mod.ts";
 * import type { SnapshotRamPiece } from "./guest_ram_snapshot.ts";
 * import assert from "node:assert/strict";
 *
 * const piece: SnapshotRamPiece = {
 *   range: new MemoryRange(0xc0000n, 0xc4000n),
 *   fileOffset: 0xc0000n,
 *   visibility: RamVisibility.ReadOnly,
 * };
 * assert.equal(`${piece.range} ${piece.visibility}`, "0xc0000-0xc4000 read-only");
 * ```
 */
export interface SnapshotRamPiece {
  /** The region's guest range. */
  readonly range: MemoryRange;
  /** Offset of `range.start` in the snapshot (and in the RAM backing). */
  readonly fileOffset: bigint;
  /** Its RAM visibility. */
  readonly visibility: RamVisibility;
}

/**
 * A device memory region at snapshot time, as metadata only (its backing's
 * contents are not copied: see {@linkcode GuestRamSnapshot}).
 *
 * @example
 * ```ts
 * import { MemoryRange } from "../mod.ts";
 * import type { SnapshotDeviceRegion } from "./guest_ram_snapshot.ts";
 * import assert from "node:assert/strict";
 *
 * const vga: SnapshotDeviceRegion = {
 *   name: "vga",
 *   range: new MemoryRange(0xa0000n, 0xc0000n),
 *   priority: 0,
 *   mapped: true,
 *   writable: true,
 *   visible: false,
 * };
 * assert.equal(`${vga.name} ${vga.range}`, "vga 0xa0000-0xc0000");
 * ```
 */
export interface SnapshotDeviceRegion {
  /** The region's name. */
  readonly name: string;
  /** Its guest range. */
  readonly range: MemoryRange;
  /** Its priority. */
  readonly priority: number;
  /** Whether it was mapped (placed in the guest). */
  readonly mapped: boolean;
  /** Whether the guest could write it (when mapped). */
  readonly writable: boolean;
  /** Whether the guest saw it (mapped and not hidden by RAM). */
  readonly visible: boolean;
}

/**
 * How guest RAM was backed when the snapshot was taken.
 *
 * @example
 * ```ts
 * import type { SnapshotMemoryMode } from "./guest_ram_snapshot.ts";
 * import assert from "node:assert/strict";
 *
 * const mode: SnapshotMemoryMode = "private";
 * assert.equal(mode, "private");
 * ```
 */
export type SnapshotMemoryMode = "shared" | "hugetlb" | "private";

const SNAPSHOT_SEALS = Fcntl.F_SEAL_SHRINK | Fcntl.F_SEAL_GROW | Fcntl.F_SEAL_WRITE |
  Fcntl.F_SEAL_SEAL;

function ramRanges(parts: GuestMemoryManagerParts): string {
  return parts.ramRegions.map((r) => String(r.range)).join(",");
}

function visibilityOf(params: { readonly writable: boolean } | undefined): RamVisibility {
  if (params === undefined) return RamVisibility.Unmapped;
  return params.writable ? RamVisibility.ReadWrite : RamVisibility.ReadOnly;
}

/**
 * A copy of a manager's guest RAM, with what is needed to give a guest the
 * same view again: the RAM visibility of each RAM region, and the device
 * memory regions as metadata.
 *
 * The copy is a sealed memfd (`guest-ram-snapshot`, sealed against writes,
 * shrinking and growing): `copy_file_range` from shared RAM (no user-space
 * buffer), `memcpy` from hugetlb RAM (hugetlbfs cannot splice) and from
 * private RAM (there is no fd: the copy goes through the host reservation,
 * where private RAM is always accessible).
 *
 * - {@linkcode GuestRamSnapshot.restore} copies all of RAM back into the
 *   same manager (or one with the same RAM layout) and sets every region's
 *   visibility back.
 * - {@linkcode GuestRamSnapshot.restoreDirty} copies back only the pages
 *   the manager's dirty tracker saw written since the snapshot, by guests
 *   or the host; the tracker must have been on since it was taken.
 * - {@linkcode GuestRamSnapshot.toBacking} makes a new RAM backing from it
 *   (a copy: the snapshot stays as it was), for
 *   `GuestMemoryBuilder.existingBacking`; {@linkcode GuestRamSnapshot.restoreVisibility}
 *   then gives the new manager the same view. Private mode has no backing
 *   to seed from (`existingBacking` needs shared memory), but a private
 *   manager can restore (fully or incrementally) like any other.
 *
 * Device memory contents are not copied: a device region's backing belongs
 * to its device (a ROM stays as it is, a framebuffer is the device's state
 * to save), so the snapshot records only names, ranges and access.
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, MemoryLayout } from "../mod.ts";
 * import { GuestRamSnapshot } from "../snapshot.ts";
 * import assert from "node:assert/strict";
 *
 * using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(4n << 20n, []));
 * const memory = manager.client().guestMemory();
 * manager.dirtyTracker().start();
 * memory.writeU32(0x1000, 7);
 * using snapshot = GuestRamSnapshot.take(manager);
 * memory.writeU32(0x1000, 8);
 * memory.writeU32(0x200000, 9);
 * assert.equal(snapshot.restoreDirty(manager), 2); // two pages copied back
 * assert.equal(memory.readU32(0x1000), 7);
 * assert.equal(memory.readU32(0x200000), 0);
 * ```
 */
export class GuestRamSnapshot implements Disposable {
  #fd: OwnedFd;
  /** A read-only mapping of the snapshot, made on first restore. */
  #view: HostMapping | undefined;
  /** The runs of an incremental restore, reused. */
  readonly #runs = new PageRuns(1024);
  /** The tracker point this snapshot's contents belong to (undefined: not tracked). */
  #point: number | undefined;
  /** Bytes of RAM. */
  readonly size: bigint;
  /** How RAM was backed. */
  readonly memoryMode: SnapshotMemoryMode;
  /** The RAM regions, in guest address order (= snapshot file order). */
  readonly pieces: readonly SnapshotRamPiece[];
  /** The device memory regions (metadata only). */
  readonly deviceRegions: readonly SnapshotDeviceRegion[];

  private constructor(
    fd: OwnedFd,
    size: bigint,
    memoryMode: SnapshotMemoryMode,
    pieces: readonly SnapshotRamPiece[],
    deviceRegions: readonly SnapshotDeviceRegion[],
    point: number | undefined,
  ) {
    this.#fd = fd;
    this.size = size;
    this.memoryMode = memoryMode;
    this.pieces = Object.freeze(pieces);
    this.deviceRegions = Object.freeze(deviceRegions);
    this.#point = point;
  }

  /**
   * Copies `manager`'s RAM and records its regions. With dirty tracking on,
   * this is the tracker's new point (taken before the copy, so a write
   * racing with it is tracked). Stop the guest's vCPUs first: the copy is
   * not atomic.
   *
   * @param manager The guest memory to copy.
   * @returns The snapshot (owns a memfd; dispose of it).
   * @throws {SnapshotError} `copy` (cause: the OS error), `tracking`
   *   (`read`: a partition's log could not be read); nothing is left and
   *   nothing changes (no descriptor or mapping, the tracker's point and
   *   dirty pages as they were).
   * @throws {DisposedError} once the manager is disposed.
   */
  static take(manager: GuestMemoryManager): GuestRamSnapshot {
    const tracker = manager.dirtyTracker();
    const parts = managerInternals(manager);
    const size = parts.ramRegions.reduce((n, r) => n + r.range.len, 0n);
    const memoryMode: SnapshotMemoryMode = parts.backing === undefined
      ? "private"
      : parts.hugepageSize !== undefined
      ? "hugetlb"
      : "shared";
    const pending = beginPoint(tracker);
    using stack = new DisposableStack();
    let fd: OwnedFd;
    try {
      fd = stack.use(
        OwnedFd.memfd("guest-ram-snapshot", Memfd.MFD_CLOEXEC | Memfd.MFD_ALLOW_SEALING),
      );
      fd.truncate(size);
      copyOut(parts, fd, size);
      fd.addSeals(SNAPSHOT_SEALS);
    } catch (cause) {
      pending?.abort();
      if (cause instanceof MissingPermissionError) throw cause;
      throw new SnapshotError({ kind: "copy", step: "snapshot", bytes: size }, { cause });
    }
    const pieces: SnapshotRamPiece[] = [];
    let fileOffset = 0n;
    for (const { range, handle } of parts.ramRegions) {
      pieces.push({ range, fileOffset, visibility: visibilityOf(handle.mapParams) });
      fileOffset += range.len;
    }
    const ram = new Set(parts.ramRegions.map((r) => `${r.range}`));
    const deviceRegions: SnapshotDeviceRegion[] = parts.regionManager.regionInfos()
      .filter((info) => !(info.name === "ram" && ram.has(`${info.range}`)))
      .map((info) => ({
        name: info.name,
        range: info.range,
        priority: info.priority,
        mapped: info.mapParams !== undefined,
        writable: info.mapParams?.writable ?? false,
        visible: info.active,
      }));
    pending?.commit();
    const point = pending === undefined ? undefined : tracker.point;
    const snapshot = new GuestRamSnapshot(fd, size, memoryMode, pieces, deviceRegions, point);
    stack.move();
    return snapshot;
  }

  /** Whether the snapshot still holds its copy. */
  get isOpen(): boolean {
    return this.#fd.isOpen;
  }

  /**
   * The snapshot's bytes at guest address `gpa` (inside one RAM region).
   *
   * @param gpa Guest physical address.
   * @param length How many bytes.
   * @returns A new array.
   * @throws {RangeError} when the range is not inside one RAM region.
   */
  read(gpa: bigint, length: number): Uint8Array<ArrayBuffer> {
    const fd = this.#open();
    const end = gpa + BigInt(length);
    const piece = this.pieces.find((p) => p.range.start <= gpa && end <= p.range.end);
    if (piece === undefined) {
      throw new RangeError(`${new MemoryRange(gpa, end)} is not inside one RAM region`);
    }
    const out = new Uint8Array(length);
    fd.readAt(piece.fileOffset + gpa - piece.range.start, out);
    return out;
  }

  /**
   * Copies all of RAM back into `manager` and sets every RAM region's
   * visibility to what it was. With tracking on, the tracker's point is
   * this snapshot again.
   *
   * A failure midway cannot be undone cheaply: after a `copy` or
   * `visibility` error, RAM holds the snapshot's bytes in part (`copy`) or
   * in full (`visibility`), the rest as it was. The RAM regions' visibility
   * and the tracker's point are as before the call, and with tracking on
   * every page of RAM counts as written since that point (so an incremental
   * restore of the point's snapshot still gives its exact contents). Calling
   * `restore` again gives exactly the snapshot.
   *
   * @param manager The manager the snapshot was taken of, or one with the same RAM regions.
   * @throws {SnapshotError} `layoutMismatch`, `tracking` (`read`, before
   *   anything is copied); nothing changes for these. `copy` (cause: the
   *   OS error), `visibility` (cause: the region change's error): see above.
   * @throws {DisposedError} once the snapshot or the manager is disposed.
   */
  restore(manager: GuestMemoryManager): void {
    const parts = this.#check(manager);
    const tracker = manager.dirtyTracker();
    const pending = beginPoint(tracker);
    const ram = this.pieces.map((p) => p.range);
    const hadView = this.#view !== undefined;
    try {
      if (parts.backing !== undefined && parts.hugepageSize === undefined) {
        copyFileRange(this.#fd.fd, 0n, parts.backing.fd, 0n, this.size);
      } else {
        const writer = this.#writer(parts);
        for (const piece of this.pieces) {
          writer.copy(Number(piece.range.start), Number(piece.range.len));
        }
      }
    } catch (cause) {
      pending?.abort(ram);
      this.#dropNewView(hadView);
      throw new SnapshotError({ kind: "copy", step: "restore", bytes: this.size }, { cause });
    }
    this.#finish(manager, pending, ram, hadView);
  }

  /**
   * Copies back only the pages written since this snapshot was taken (or
   * last restored), as the manager's dirty tracker reports them (guests and
   * host), and sets every RAM region's visibility back. The tracker's point
   * is then this snapshot again, so the next call copies only what changed
   * after this one.
   *
   * A failure midway (`copy`, `visibility`) leaves some of the pages
   * copied back, the RAM regions' visibility and the tracker's point as
   * before, and every page found written still counted as written: calling
   * `restoreDirty` (or `restore`) again gives exactly the snapshot.
   *
   * @param manager The manager the snapshot was taken of.
   * @returns How many pages were copied.
   * @throws {SnapshotError} `notTracking` (tracking is off), `stalePoint`
   *   (the tracker was reset, or another snapshot taken or restored, since;
   *   or `manager` is another manager with the same RAM), `layoutMismatch`,
   *   `tracking` (`read`); nothing changes for these. `copy` (cause: the OS
   *   error), `visibility` (cause: the region change's error): see above.
   * @throws {DisposedError} once the snapshot or the manager is disposed.
   */
  restoreDirty(manager: GuestMemoryManager): number {
    const parts = this.#check(manager);
    const tracker = manager.dirtyTracker();
    if (!tracker.isTracking || this.#point === undefined) {
      throw new SnapshotError({ kind: "notTracking" });
    }
    if (tracker.point !== this.#point) {
      throw new SnapshotError({
        kind: "stalePoint",
        point: tracker.point,
        snapshotPoint: this.#point,
      });
    }
    const pending = beginPoint(tracker)!;
    const dirty = pending.dirty;
    let copied = 0;
    const hadView = this.#view !== undefined;
    try {
      copied = this.#writer(parts).copyDirty(dirty, this.#runs);
    } catch (cause) {
      pending.abort();
      this.#dropNewView(hadView);
      throw new SnapshotError({ kind: "copy", step: "restore", bytes: this.size }, { cause });
    }
    this.#finish(manager, pending, [], hadView);
    return copied;
  }

  /**
   * Sets the visibility of each RAM region of `manager` to what it was in
   * the snapshot (in one transaction), for a manager restored or seeded
   * from it. All or nothing: when a change fails, the regions changed
   * before it are set back.
   *
   * @param manager A manager with the snapshot's RAM regions.
   * @throws {SnapshotError} `layoutMismatch`, `visibility` (cause: the
   *   error of the region change that failed); nothing changes.
   * @throws {DisposedError} once the manager is disposed.
   */
  restoreVisibility(manager: GuestMemoryManager): void {
    const parts = this.#check(manager);
    const regions = parts.ramRegions;
    let i = 0;
    while (
      i < regions.length && visibilityOf(regions[i].handle.mapParams) === this.pieces[i].visibility
    ) {
      i++;
    }
    if (i === regions.length) return; // nothing to change: no transaction
    const control = manager.ramVisibilityControl();
    const changed: [MemoryRange, RamVisibility][] = [];
    try {
      // One transaction (its commit is all or nothing, and batches the KVM
      // slot changes); a change refused inside it is undone in it.
      using _ = manager.transaction();
      try {
        // (Regions before `i` are as wanted already.)
        for (let k = i; k < regions.length; k++) {
          const { range, handle } = regions[k];
          const was = visibilityOf(handle.mapParams);
          const wanted = this.pieces[k].visibility;
          if (was === wanted) continue;
          control.setRamVisibility(range, wanted);
          changed.push([range, was]);
        }
      } catch (error) {
        for (const [range, was] of changed.reverse()) {
          try {
            control.setRamVisibility(range, was);
          } catch (undo) {
            warn(`failed to set the visibility of RAM ${range} back to ${was}`, undo);
          }
        }
        throw error;
      }
    } catch (cause) {
      throw new SnapshotError({ kind: "visibility" }, { cause });
    }
  }

  /**
   * A new RAM backing holding the snapshot's RAM (a copy: guests built on
   * it never change the snapshot), for `GuestMemoryBuilder.existingBacking`
   * with the same layout and x86 legacy option.
   *
   * @returns The backing, owned by the caller.
   * @throws {SnapshotError} `copy`.
   * @throws {DisposedError} once the snapshot is disposed.
   */
  toBacking(): SharedMemoryBacking {
    const source = this.#open();
    using stack = new DisposableStack();
    try {
      const fd = stack.use(
        OwnedFd.memfd("guest-ram", Memfd.MFD_CLOEXEC | Memfd.MFD_ALLOW_SEALING),
      );
      fd.truncate(this.size);
      copyFileRange(source.fd, 0n, fd.fd, 0n, this.size);
      fd.addSeals(Fcntl.F_SEAL_SHRINK | Fcntl.F_SEAL_GROW | Fcntl.F_SEAL_SEAL);
      const backing = adoptBacking(fd);
      stack.move();
      return backing;
    } catch (cause) {
      if (cause instanceof MissingPermissionError) throw cause;
      throw new SnapshotError({ kind: "copy", step: "clone", bytes: this.size }, { cause });
    }
  }

  /**
   * Unmaps the view and closes the memfd; idempotent (when unmapping the
   * view fails, the memfd is closed all the same and the view stays to be
   * unmapped by the next call).
   */
  [Symbol.dispose](): void {
    try {
      this.#view?.unmap();
      this.#view = undefined;
    } finally {
      this.#fd.close();
    }
  }

  #open(): OwnedFd {
    if (!this.#fd.isOpen) throw new DisposedError({ object: "guest RAM snapshot" });
    return this.#fd;
  }

  /** The manager's parts, once its RAM regions are the snapshot's. */
  #check(manager: GuestMemoryManager): GuestMemoryManagerParts {
    this.#open();
    manager.ramVisibilityControl(); // throws DisposedError for a disposed manager
    const parts = managerInternals(manager);
    const regions = parts.ramRegions;
    let same = regions.length === this.pieces.length;
    for (let i = 0; same && i < regions.length; i++) {
      same = regions[i].range.equals(this.pieces[i].range);
    }
    if (!same) {
      const snapshot = this.pieces.map((p) => String(p.range)).join(",");
      throw new SnapshotError({ kind: "layoutMismatch", snapshot, manager: ramRanges(parts) });
    }
    return parts;
  }

  /**
   * After a restore's copy: the visibility back, then the pending point
   * (this snapshot's from now on); if the visibility fails, the old point
   * stays, with `written` counted as written.
   */
  #finish(
    manager: GuestMemoryManager,
    pending: PendingPoint | undefined,
    written: readonly MemoryRange[],
    hadView: boolean,
  ): void {
    try {
      this.restoreVisibility(manager);
    } catch (error) {
      pending?.abort(written);
      this.#dropNewView(hadView);
      throw error;
    }
    if (pending === undefined) {
      this.#point = undefined;
      return;
    }
    pending.commit();
    this.#point = manager.dirtyTracker().point;
  }

  /**
   * After a failed restore: unmaps the view of the snapshot when this call
   * mapped it (`hadView` false), so that nothing of the call is left; a
   * failure to unmap keeps the view (it goes with the snapshot).
   */
  #dropNewView(hadView: boolean): void {
    const view = this.#view;
    if (hadView || view === undefined) return;
    try {
      view.unmap();
    } catch (cause) {
      warn("failed to unmap the view of a guest RAM snapshot after a failed restore", cause);
      return;
    }
    this.#view = undefined;
  }

  /** Copies guest ranges of RAM back from the snapshot into `parts`' RAM. */
  #writer(parts: GuestMemoryManagerParts): RamWriter {
    this.#view ??= HostMapping.shared(this.#fd.fd, 0n, this.size, Mman.PROT_READ);
    return new RamWriter(parts, this.pieces, this.#view.address);
  }
}

/**
 * Copies guest ranges from the snapshot into RAM: straight into the host
 * reservation where RAM is mapped writable there (a `memcpy` per run),
 * else through a temporary shared mapping of the RAM file (hidden or
 * read-only pieces).
 */
class RamWriter {
  readonly #parts: GuestMemoryManagerParts;
  /** Host address of the snapshot's mapping. */
  readonly #source: bigint;
  readonly #starts: number[];
  readonly #ends: number[];
  readonly #offsets: number[];
  /** Per piece: whether one writable RAM entry of the reservation covers it. */
  readonly #direct: boolean[];
  #piece = 0;

  constructor(parts: GuestMemoryManagerParts, pieces: readonly SnapshotRamPiece[], source: bigint) {
    this.#parts = parts;
    this.#source = source;
    this.#starts = pieces.map((p) => Number(p.range.start));
    this.#ends = pieces.map((p) => Number(p.range.end));
    this.#offsets = pieces.map((p) => Number(p.fileOffset));
    this.#direct = pieces.map((p) => this.#covers(p));
  }

  /** Whether the reservation maps all of `piece` writable, as RAM. */
  #covers(piece: SnapshotRamPiece): boolean {
    const entry = this.#parts.va.find(Number(piece.range.start));
    // (A read-only region keeps host-writable mappings where it can.)
    if (entry === undefined || !entry.hostWritable || entry.range.end < piece.range.end) {
      return false;
    }
    const backing = this.#parts.backing;
    if (backing === undefined) return entry.kind === "private";
    return entry.kind === "shared" && entry.fd === backing.fd &&
      entry.fileOffset + (piece.range.start - entry.range.start) === piece.fileOffset;
  }

  /**
   * Copies the pages of `dirty` inside the pieces back; returns how many.
   * `list` holds the runs of one piece at a time (no closure or object per
   * run).
   */
  copyDirty(dirty: PageBitmap, list: PageRuns): number {
    let copied = 0;
    for (let i = 0; i < this.#starts.length; i++) {
      const start = this.#starts[i];
      const { pairs: runs, count: n } = dirty.runs(start / 4096, this.#ends[i] / 4096, list);
      for (let k = 0; k < n; k++) copied += runs[2 * k + 1];
      if (this.#direct[i]) {
        // Page p of the piece is at va.base + 4096 p in RAM, at
        // source + offset - start + 4096 p in the snapshot.
        const delta = BigInt(this.#offsets[i] - start);
        hostCopyPageRuns(this.#parts.va.base, this.#source + delta, runs, n);
        continue;
      }
      this.#piece = i;
      for (let k = 0; k < n; k++) this.copy(runs[2 * k] * 4096, runs[2 * k + 1] * 4096);
    }
    return copied;
  }

  /** Copies guest `[gpa, gpa + length)` (inside one piece, page aligned) back. */
  copy(gpa: number, length: number): void {
    let i = this.#piece;
    if (!(gpa >= this.#starts[i] && gpa < this.#ends[i])) {
      i = this.#starts.findIndex((start, k) => gpa >= start && gpa < this.#ends[k]);
      this.#piece = i;
    }
    const offset = this.#offsets[i] + gpa - this.#starts[i];
    const source = this.#source + BigInt(offset);
    if (this.#direct[i]) {
      hostCopy(this.#parts.va.base + BigInt(gpa), source, BigInt(length));
      return;
    }
    const backing = this.#parts.backing;
    if (backing === undefined) {
      // Private RAM outside the table cannot happen: private entries stay.
      throw new RangeError(`private RAM at ${gpa} is not mapped`);
    }
    const align = Number(this.#parts.hugepageSize ?? PAGE_SIZE);
    const from = Math.floor(offset / align) * align;
    const to = Math.ceil((offset + length) / align) * align;
    using map = HostMapping.shared(
      backing.fd,
      BigInt(from),
      BigInt(to - from),
      Mman.PROT_READ | Mman.PROT_WRITE,
    );
    hostCopy(map.address + BigInt(offset - from), source, BigInt(length));
    map.unmap(); // (a failed unmap is tried again on the way out: no mapping stays)
  }
}

/** Copies `size` bytes of RAM (backing order) into `fd`. */
function copyOut(parts: GuestMemoryManagerParts, fd: OwnedFd, size: bigint): void {
  const backing = parts.backing;
  if (backing !== undefined && parts.hugepageSize === undefined) {
    copyFileRange(backing.fd, 0n, fd.fd, 0n, size);
    return;
  }
  using out = HostMapping.shared(fd.fd, 0n, size, Mman.PROT_READ | Mman.PROT_WRITE);
  if (backing !== undefined) {
    // hugetlbfs cannot splice: copy through a view of the file.
    using ram = HostMapping.shared(backing.fd, 0n, size, Mman.PROT_READ);
    hostCopy(out.address, ram.address, size);
    // (A failed unmap is tried again on the way out: no mapping outlives a failed snapshot.)
    ram.unmap();
    out.unmap();
    return;
  }
  // Private RAM: no fd; every RAM range is accessible in the reservation.
  let offset = 0n;
  for (const { range } of parts.ramRegions) {
    hostCopy(out.address + offset, parts.va.base + range.start, range.len);
    offset += range.len;
  }
  out.unmap();
}
