/**
 * A deliberately naive model of the region manager, used as the oracle in
 * property tests (and by guest probes): regions are kept in a plain list in
 * insertion order and every question is answered by scanning all of them,
 * page by page. No trees, no incremental state.
 *
 * - The page at `gpa` shows the mapped region containing it with the highest
 *   priority; between equal priorities, the one added first.
 * - A region is active when it is mapped and no mapped region that beats it
 *   overlaps it.
 * - Each operation records the events that the partition and the DMA
 *   targets should have received, found by comparing the active regions
 *   (and their mappings) before and after.
 *
 * Operations that the real manager refuses throw {@linkcode ModelError}
 * with the same message, leaving the model unchanged.
 *
 * @module
 */
import { MemoryRange } from "../../layout/memory_range.ts";
import type { MapParams } from "../../regions/_map_params.ts";

/** What the model expects the real manager to refuse, with the expected message. */
export class ModelError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ModelError";
  }
}

/** A backing object, as far as the model cares. */
export interface ModelBacking {
  readonly fd: number;
}

/** One mapping of a model region (range relative to the region). */
export interface ModelMapping {
  readonly range: MemoryRange;
  readonly backing: ModelBacking;
  readonly fileOffset: bigint;
  readonly writable: boolean;
}

/** One model region. */
export interface ModelRegion {
  readonly id: number;
  readonly name: string;
  readonly range: MemoryRange;
  readonly priority: number;
  readonly dmaTarget: boolean;
  params: MapParams | undefined;
  mappings: ModelMapping[];
}

/** What the guest sees at one address. */
export interface ModelVisible {
  /** The visible region's name and id. */
  readonly regionName: string;
  readonly regionId: number;
  /** The region's map params. */
  readonly writable: boolean;
  readonly executable: boolean;
  /** The backing at that address, or undefined for a hole in the region's mappings. */
  readonly backing:
    | {
      readonly fd: number;
      readonly fileOffset: bigint;
      /** Whether host writes through the table are allowed (mapping and region writable). */
      readonly hostWritable: boolean;
      /**
       * The protection of the host mapping: the mapping's own writability.
       * A read-only region over a writable mapping stays writable in the
       * host page tables; the table refuses host writes instead.
       */
      readonly mappingWritable: boolean;
    }
    | undefined;
}

/** A live range of the host VA reservation, as the model expects it. */
export interface ModelVaEntry {
  readonly range: MemoryRange;
  readonly fd: number;
  readonly fileOffset: bigint;
  readonly writable: boolean;
}

/** Events expected from one operation, as canonical strings. */
export interface ModelEvents {
  /** `map <range> rw|ro x|-`, `prefetch <range>` (prefetching partitions) and `unmap <range>`. */
  readonly partition: string[];
  /** `map <range> fd=<fd> off=<hex> rw|ro` and `unmap <range>`. */
  readonly dma: string[];
}

/** Canonical form of a partition map event. */
export function partitionMapEvent(range: MemoryRange, params: MapParams): string {
  return `map ${range} ${params.writable ? "rw" : "ro"} ${params.executable ? "x" : "-"}`;
}

/** Canonical form of a DMA map event. */
export function dmaMapEvent(
  range: MemoryRange,
  fd: number,
  fileOffset: bigint,
  writable: boolean,
): string {
  return `map ${range} fd=${fd} off=0x${fileOffset.toString(16)} ${writable ? "rw" : "ro"}`;
}

interface ActiveState {
  readonly region: ModelRegion;
  readonly params: MapParams;
  readonly mappings: ModelMapping[];
}

const sameParams = (a: MapParams, b: MapParams) =>
  a.writable === b.writable && a.executable === b.executable && a.prefetch === b.prefetch;

/** The naive region model. */
export class RegionModel {
  /** Live regions in insertion order. */
  readonly regions: ModelRegion[] = [];
  /** Size of the guest address space (regions must end inside it). */
  readonly addressSpace: bigint;
  #events: ModelEvents = { partition: [], dma: [] };
  #nextId = 0;

  /** An empty model over `[0, addressSpace)`. */
  constructor(addressSpace: bigint) {
    this.addressSpace = addressSpace;
  }

  /** The events expected since the last call, and clears them. */
  takeEvents(): ModelEvents {
    const events = this.#events;
    this.#events = { partition: [], dma: [] };
    return events;
  }

  /** The live region with `id` (throws for an unknown or removed one). */
  region(id: number): ModelRegion {
    const region = this.regions.find((r) => r.id === id);
    if (region === undefined) throw new ModelError(`region ${id} is not in the model`);
    return region;
  }

  /** Adds a region; throws ModelError with the manager's admission message. */
  newRegion(name: string, range: MemoryRange, priority: number, dmaTarget: boolean): number {
    this.#checkAdmission(name, range, priority, undefined);
    const id = this.#nextId++;
    this.regions.push({ id, name, range, priority, dmaTarget, params: undefined, mappings: [] });
    return id;
  }

  /** Maps region `id` with `params`. */
  map(id: number, params: MapParams): void {
    const region = this.region(id);
    this.#change(() => {
      region.params = { ...params };
    }, region.params !== undefined && sameParams(region.params, params));
  }

  /** Unmaps region `id`. */
  unmap(id: number): void {
    const region = this.region(id);
    this.#change(() => {
      region.params = undefined;
    });
  }

  /** Removes region `id`. */
  remove(id: number): void {
    const region = this.region(id);
    this.#change(() => {
      this.regions.splice(this.regions.indexOf(region), 1);
    });
  }

  /**
   * Throws the ModelError that removing region `id` and adding it again at
   * `range` would throw; changes nothing.
   */
  checkMove(id: number, range: MemoryRange): void {
    const region = this.region(id);
    this.#checkAdmission(region.name, range, region.priority, region);
  }

  #checkAdmission(
    name: string,
    range: MemoryRange,
    priority: number,
    except: ModelRegion | undefined,
  ): void {
    if (range.end > this.addressSpace) {
      throw new ModelError(
        `memory region ${name} at ${range} is outside the 0x${
          this.addressSpace.toString(16)
        }-byte guest address space`,
      );
    }
    for (const other of this.regions) {
      if (other === except || !range.overlaps(other.range)) continue;
      const ok = (priority < other.priority && other.range.contains(range)) ||
        (priority === other.priority && other.range.equals(range)) ||
        (priority > other.priority && range.contains(other.range));
      if (!ok) {
        const rule = priority < other.priority
          ? "a region of lower priority must lie inside the region it overlaps"
          : priority === other.priority
          ? "regions of equal priority that overlap must have the same range"
          : "a region of higher priority must contain the region it overlaps";
        throw new ModelError(
          `memory region ${name} overlaps with existing region ${other.name}: ${name} is ${range} at priority ${priority}, ${other.name} is ${other.range} at priority ${other.priority}; ${rule}`,
        );
      }
    }
  }

  /**
   * Puts back `region` (as {@linkcode region} returned it before it was
   * removed) at its place in insertion order, unmapped, with its mappings:
   * what a failed device memory move does.
   */
  restore(region: ModelRegion): void {
    this.#change(() => {
      region.params = undefined;
      const index = this.regions.findIndex((r) => r.id > region.id);
      this.regions.splice(index < 0 ? this.regions.length : index, 0, region);
    });
  }

  /** Adds a mapping to region `id`; throws ModelError as the manager would. */
  addMapping(
    id: number,
    rangeInRegion: MemoryRange,
    backing: ModelBacking,
    fileOffset: bigint,
    writable: boolean,
  ): void {
    const region = this.region(id);
    if (rangeInRegion.end > region.range.len) {
      throw new ModelError(
        `mapping ${rangeInRegion} is outside memory region ${region.name} (0x${
          region.range.len.toString(16)
        } bytes)`,
      );
    }
    if (rangeInRegion.isEmpty()) return;
    const clash = region.mappings.filter((m) => m.range.overlaps(rangeInRegion))
      .sort((a, b) => a.range.compare(b.range))[0];
    if (clash !== undefined) {
      throw new ModelError(
        `mapping ${rangeInRegion} overlaps mapping ${clash.range} in memory region ${region.name}`,
      );
    }
    this.#change(() => {
      region.mappings = [...region.mappings, {
        range: rangeInRegion,
        backing,
        fileOffset,
        writable,
      }]
        .sort((a, b) => a.range.compare(b.range));
    });
  }

  /** Removes the mappings of region `id` inside `rangeInRegion`. */
  removeMappings(id: number, rangeInRegion: MemoryRange): void {
    const region = this.region(id);
    const touched = region.mappings.filter((m) => m.range.overlaps(rangeInRegion))
      .sort((a, b) => a.range.compare(b.range));
    const partial = touched.find((m) => !rangeInRegion.contains(m.range));
    if (partial !== undefined) {
      throw new ModelError(
        `mapping ${partial.range} of memory region ${region.name} is only partly inside ${rangeInRegion}`,
      );
    }
    this.#change(() => {
      region.mappings = region.mappings.filter((m) => !touched.includes(m));
    });
  }

  /** Whether `a` beats `b` where both are mapped and overlap. */
  static beats(a: ModelRegion, b: ModelRegion): boolean {
    return a.priority > b.priority || (a.priority === b.priority && a.id < b.id);
  }

  /** Whether region `id` is active. */
  isActive(region: ModelRegion): boolean {
    if (region.params === undefined || region.range.isEmpty()) return false;
    return !this.regions.some((other) =>
      other !== region && other.params !== undefined && other.range.overlaps(region.range) &&
      RegionModel.beats(other, region)
    );
  }

  /** The active regions, ordered by address. */
  activeRegions(): ModelRegion[] {
    return this.regions.filter((r) => this.isActive(r))
      .sort((a, b) => a.range.compare(b.range));
  }

  /** What the guest sees at `gpa`, scanning every region. */
  visibleAt(gpa: bigint): ModelVisible | undefined {
    let best: ModelRegion | undefined;
    for (const region of this.regions) {
      if (region.params === undefined || !region.range.containsAddr(gpa)) continue;
      if (best === undefined || RegionModel.beats(region, best)) best = region;
    }
    if (best === undefined) return undefined;
    const params = best.params!;
    const offset = gpa - best.range.start;
    const mapping = best.mappings.find((m) => m.range.containsAddr(offset));
    return {
      regionName: best.name,
      regionId: best.id,
      writable: params.writable,
      executable: params.executable,
      backing: mapping === undefined ? undefined : {
        fd: mapping.backing.fd,
        fileOffset: mapping.fileOffset + (offset - mapping.range.start),
        hostWritable: mapping.writable && params.writable,
        mappingWritable: mapping.writable,
      },
    };
  }

  /** The expected host VA entries, built page by page from {@linkcode visibleAt}. */
  expectedVa(size: bigint, pageSize = 0x1000n): ModelVaEntry[] {
    const out: ModelVaEntry[] = [];
    for (let gpa = 0n; gpa < size; gpa += pageSize) {
      const backing = this.visibleAt(gpa)?.backing;
      if (backing === undefined) continue;
      const last = out[out.length - 1];
      if (
        last !== undefined && last.range.end === gpa && last.fd === backing.fd &&
        last.writable === backing.hostWritable &&
        last.fileOffset + last.range.len === backing.fileOffset
      ) {
        out[out.length - 1] = { ...last, range: new MemoryRange(last.range.start, gpa + pageSize) };
      } else {
        out.push({
          range: new MemoryRange(gpa, gpa + pageSize),
          fd: backing.fd,
          fileOffset: backing.fileOffset,
          writable: backing.hostWritable,
        });
      }
    }
    return out;
  }

  /** The expected /proc/self/maps permissions, as merged runs over `[0, size)`. */
  expectedProtections(
    size: bigint,
    pageSize = 0x1000n,
  ): { start: bigint; end: bigint; perms: string }[] {
    const out: { start: bigint; end: bigint; perms: string }[] = [];
    for (let gpa = 0n; gpa < size; gpa += pageSize) {
      const backing = this.visibleAt(gpa)?.backing;
      const perms = backing === undefined ? "---p" : backing.mappingWritable ? "rw-s" : "r--s";
      const last = out[out.length - 1];
      if (last !== undefined && last.perms === perms) last.end = gpa + pageSize;
      else out.push({ start: gpa, end: gpa + pageSize, perms });
    }
    return out;
  }

  /** The expected partition map: one entry per active region. */
  expectedPartitionMap(): string[] {
    return this.activeRegions().map((r) => partitionMapEvent(r.range, r.params!));
  }

  /** `mapDma` calls a newly registered target should get (address order). */
  dmaReplay(): string[] {
    return this.activeRegions().filter((r) => r.dmaTarget).flatMap((r) =>
      r.mappings.map((m) => this.#dmaMap(r, r.params!, m))
    );
  }

  /** `unmapDma` calls a target being removed should get (address order). */
  dmaRemoval(): string[] {
    return this.activeRegions().filter((r) => r.dmaTarget).flatMap((r) =>
      r.mappings.map((m) => `unmap ${this.#absolute(r, m.range)}`)
    );
  }

  #absolute(region: ModelRegion, range: MemoryRange): MemoryRange {
    return new MemoryRange(region.range.start + range.start, region.range.start + range.end);
  }

  #dmaMap(region: ModelRegion, params: MapParams, m: ModelMapping): string {
    return dmaMapEvent(
      this.#absolute(region, m.range),
      m.backing.fd,
      m.fileOffset,
      m.writable && params.writable,
    );
  }

  #snapshot(): Map<number, ActiveState> {
    const out = new Map<number, ActiveState>();
    for (const region of this.activeRegions()) {
      out.set(region.id, { region, params: region.params!, mappings: [...region.mappings] });
    }
    return out;
  }

  /** Applies `mutate` and records the events it implies. */
  #change(mutate: () => void, noop = false): void {
    if (noop) return;
    const before = this.#snapshot();
    mutate();
    const after = this.#snapshot();
    const partition: string[] = [];
    const dma: string[] = [];
    for (const [id, old] of before) {
      const now = after.get(id);
      if (now !== undefined && sameParams(now.params, old.params)) {
        // Still active as before: only mapping changes reach DMA targets.
        if (!old.region.dmaTarget) continue;
        for (const m of old.mappings) {
          if (!now.mappings.includes(m)) dma.push(`unmap ${this.#absolute(old.region, m.range)}`);
        }
        for (const m of now.mappings) {
          if (!old.mappings.includes(m)) dma.push(this.#dmaMap(now.region, now.params, m));
        }
        continue;
      }
      partition.push(`unmap ${old.region.range}`);
      // A region that stays active with the same writability (only its
      // execute or prefetch flag changed) is nothing new to DMA targets.
      const sameForDma = now !== undefined && now.params.writable === old.params.writable;
      if (old.region.dmaTarget && !sameForDma) dma.push(`unmap ${old.region.range}`);
    }
    for (const [id, now] of after) {
      const old = before.get(id);
      if (old !== undefined && sameParams(now.params, old.params)) continue;
      partition.push(partitionMapEvent(now.region.range, now.params));
      if (now.params.prefetch) partition.push(`prefetch ${now.region.range}`);
      const sameForDma = old !== undefined && now.params.writable === old.params.writable;
      if (now.region.dmaTarget && !sameForDma) {
        for (const m of now.mappings) dma.push(this.#dmaMap(now.region, now.params, m));
      }
    }
    this.#events.partition.push(...partition);
    this.#events.dma.push(...dma);
  }
}
