/**
 * Test fixtures for region manager tests: a VA reservation, a memfd
 * backing, a recording partition and a recording DMA target.
 */
import { Fcntl, Memfd } from "../../ffi/_constants.ts";
import { OwnedFd } from "../../ffi/_owned_fd.ts";
import { MemoryRange } from "../../layout/memory_range.ts";
import type { Mappable } from "../../mapping/mappable.ts";
import { VaMapper } from "../../mapping/_va_mapper.ts";
import { PartitionMapper } from "../../partition/_partition_mapper.ts";
import type { MapParams } from "../../regions/_map_params.ts";
import { RecordingPartition } from "../../testing/recording_partition.ts";
import type { DmaTarget } from "../../regions/dma_target.ts";
import { RegionManager } from "../../regions/_region_manager.ts";

/**
 * A memfd of `size` bytes sealed against shrinking (`F_SEAL_SHRINK`, it may
 * still grow), as device memory backings must be.
 */
export function shrinkSealedMemfd(name: string, size: bigint): OwnedFd {
  const fd = OwnedFd.memfd(name, Memfd.MFD_CLOEXEC | Memfd.MFD_ALLOW_SEALING);
  try {
    fd.truncate(size);
    fd.addSeals(Fcntl.F_SEAL_SHRINK);
  } catch (error) {
    fd.close();
    throw error;
  }
  return fd;
}

/** Writable + executable, no prefetch. */
export const RWX: MapParams = { writable: true, executable: true, prefetch: false };
/** Read-only + executable, no prefetch. */
export const RX: MapParams = { writable: false, executable: true, prefetch: false };

/** `new MemoryRange(start, end)`. */
export function r(start: bigint | number, end: bigint | number): MemoryRange {
  return new MemoryRange(BigInt(start), BigInt(end));
}

/** A DMA target that logs `map <range>` / `unmap <range>` and tracks host addresses. */
export class RecordingDmaTarget implements DmaTarget {
  readonly events: string[] = [];
  readonly hostAddresses: (bigint | undefined)[] = [];
  readonly details: { range: MemoryRange; fileOffset: bigint; writable: boolean; fd: number }[] =
    [];
  mapDma(
    range: MemoryRange,
    hostAddress: bigint | undefined,
    backing: Mappable,
    fileOffset: bigint,
    writable: boolean,
  ): void {
    this.events.push(`map ${range}`);
    this.hostAddresses.push(hostAddress);
    this.details.push({ range, fileOffset, writable, fd: backing.fd });
  }
  unmapDma(range: MemoryRange): void {
    this.events.push(`unmap ${range}`);
  }
  /** Returns and clears the log. */
  take(): string[] {
    const events = [...this.events];
    this.events.length = 0;
    this.hostAddresses.length = 0;
    this.details.length = 0;
    return events;
  }
}

/** Everything a region test needs, disposed together. */
export class RegionFixture implements Disposable {
  readonly va: VaMapper;
  readonly backing: OwnedFd;
  readonly manager: RegionManager;
  readonly partition: RecordingPartition;
  readonly mapper: PartitionMapper;

  constructor(size: bigint = 0x100000n, options: { partition?: boolean } = {}) {
    this.va = VaMapper.reserve(size);
    this.backing = shrinkSealedMemfd("region-test", size);
    this.manager = new RegionManager(this.va);
    this.partition = new RecordingPartition();
    this.mapper = new PartitionMapper(this.partition, this.va, 0n, false);
    if (options.partition ?? true) this.manager.addPartition(this.mapper);
  }

  /** The partition log as `map <range> rw|ro` / `unmap <range>` strings; clears it. */
  takePartitionEvents(): string[] {
    const out = this.partition.events.map((e) => {
      const range = MemoryRange.fromLength(e.gpa, e.size);
      if (e.kind === "map") return `map ${range} ${e.writable ? "rw" : "ro"}`;
      return `${e.kind} ${range}`;
    });
    this.partition.clearEvents();
    return out;
  }

  /** The partition map as `<range> rw|ro` strings. */
  partitionMap(): string[] {
    return this.partition.mappings().map((m) =>
      `${MemoryRange.fromLength(m.gpa, m.size)} ${m.writable ? "rw" : "ro"}`
    );
  }

  [Symbol.dispose](): void {
    this.manager[Symbol.dispose]();
    this.va[Symbol.dispose]();
    this.backing.close();
  }
}
