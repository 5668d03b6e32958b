/**
 * The guest memory builder: checks a configuration against a memory layout,
 * allocates guest RAM, reserves the host address range and creates the RAM
 * regions, giving a {@linkcode GuestMemoryManager}.
 *
 * @module
 */

import { MissingPermissionError } from "./ffi/missing_permission_error.ts";
import type { OwnedFd } from "./ffi/_owned_fd.ts";
import { hostPageSize, isLinux } from "./ffi/_system.ts";
import { warn } from "./diagnostics/warnings.ts";
import type { MemoryLayout } from "./layout/memory_layout.ts";
import { MemoryRange } from "./layout/memory_range.ts";
import { MemorySize } from "./layout/memory_size.ts";
import { VaMapper } from "./mapping/_va_mapper.ts";
import {
  type GuestMemoryManager,
  newGuestMemoryManager,
  type RamRegion,
} from "./manager/guest_memory_manager.ts";
import {
  DEFAULT_HUGEPAGE_SIZE,
  MAX_HOST_SIZE,
  validateHugepageRamAlignment,
  validateHugepageSize,
} from "./manager/_hugepage_validation.ts";
import { MemoryBuildError } from "./manager/memory_build_error.ts";
import { allocateHugetlbRam, allocateSharedRam } from "./manager/_ram_backing.ts";
import { duplicateBacking, type SharedMemoryBacking } from "./manager/shared_memory_backing.ts";
import { RegionManager } from "./regions/_region_manager.ts";
import { splitX86LegacyRam, X86_LEGACY_MIN_END } from "./regions/_x86_legacy.ts";

/** The region priority of RAM: it overrides everything else. */
export const RAM_PRIORITY = 255;

/**
 * The host reservation starts at a multiple of 2 MiB (or of the hugepage
 * size, if larger): hugetlb files map only at hugepage-aligned addresses,
 * and transparent hugepages back only 2 MiB-aligned host ranges, so guest
 * RAM aligned in guest physical space is aligned in the host too.
 */
export const VA_ALIGNMENT: bigint = 2n << 20n;

/** The VMA name of private guest RAM in /proc/self/maps (`[anon:guest-ram-private]`). */
export const PRIVATE_RAM_NAME = "guest-ram-private";

/**
 * Builds a {@linkcode GuestMemoryManager}. Every option is off by default;
 * the setters return the builder so calls chain.
 *
 * `build(layout)` checks the options in a fixed order and throws a
 * {@linkcode MemoryBuildError} for the first rule broken:
 * 1. private memory with x86 legacy support, or with an existing backing;
 * 2. transparent hugepages without private memory, or off Linux;
 * 3. hugepages off Linux, with private memory, with an existing backing,
 *    with x86 legacy support; then the hugepage size; then the alignment of
 *    the RAM size and of each RAM range (VTL2 range included).
 *
 * It then allocates RAM (`guest-ram` memfd, hugetlb memfd with every page
 * taken from the pool, the existing backing, or nothing in private mode),
 * checks the VTL0 alias map fits, reserves host address space for
 * `[0, max(end of layout, end of VTL2))`, splits low RAM for x86 legacy
 * support, backs private RAM with anonymous memory, and creates one mapped
 * `ram` region (priority 255) per RAM range. Whatever fails releases all
 * that was allocated before it.
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, MemoryBuildError, MemoryLayout, MemoryRange } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const layout = MemoryLayout.fromGaps(64n << 20n, [new MemoryRange(0xe0000000n, 0x100000000n)]);
 * using manager = new GuestMemoryBuilder().prefetchRam(true).build(layout);
 * manager.client().guestMemory().write(0x1000n, new Uint8Array([1, 2, 3]));
 * assert.equal(manager.client().guestMemory().readU8(0x1002n), 3);
 *
 * assert.throws(() => new GuestMemoryBuilder().transparentHugepages(true).build(layout), {
 *   name: "MemoryBuildError",
 *   message: "transparent huge pages requires private memory mode",
 * });
 * assert.ok(MemoryBuildError);
 * ```
 */
export class GuestMemoryBuilder {
  #existingBacking: SharedMemoryBacking | undefined;
  #vtl0AliasMap: bigint | undefined;
  #pinMappings = false;
  #prefetchRam = false;
  #x86LegacySupport = false;
  #privateMemory = false;
  #transparentHugepages = false;
  #hugepages: { size: bigint | undefined } | undefined;

  /**
   * Uses `backing` (from `GuestMemoryManager.sharedMemoryBacking`) as guest
   * RAM instead of allocating it; `undefined` allocates. The builder takes
   * its own duplicate of the descriptor; the caller still disposes `backing`.
   */
  existingBacking(backing: SharedMemoryBacking | undefined): this {
    this.#existingBacking = backing;
    return this;
  }

  /**
   * The offset of the VTL0 alias map: VTL2 partitions additionally see all
   * guest memory again at `gpa + offset`. `undefined` turns it off.
   */
  vtl0AliasMap(offset: bigint | undefined): this {
    this.#vtl0AliasMap = offset;
    return this;
  }

  /** Pins every range mapped into a partition (for assigned devices). */
  pinMappings(enable: boolean): this {
    this.#pinMappings = enable;
    return this;
  }

  /** Prefetches RAM mappings into partitions (shared memory mode only). */
  prefetchRam(enable: boolean): this {
    this.#prefetchRam = enable;
    return this;
  }

  /**
   * Splits the first 1 MiB of RAM into separately controllable regions (VGA
   * window, PAM pieces of the BIOS area) for `RamVisibilityControl`.
   */
  x86LegacySupport(enable: boolean): this {
    this.#x86LegacySupport = enable;
    return this;
  }

  /**
   * Backs RAM with private anonymous memory placed in the reservation
   * instead of a shared memfd. No shared backing exists then.
   */
  privateMemory(enable: boolean): this {
    this.#privateMemory = enable;
    return this;
  }

  /** Advises transparent hugepages on private RAM (`MADV_HUGEPAGE`). */
  transparentHugepages(enable: boolean): this {
    this.#transparentHugepages = enable;
    return this;
  }

  /**
   * Backs RAM with a hugetlb memfd of `size`-byte pages (default 2 MiB),
   * taking every page from the pool at build time. Calling this at all
   * turns hugetlb backing on.
   */
  hugepages(size?: bigint): this {
    this.#hugepages = { size };
    return this;
  }

  /**
   * Checks the options against `layout`, allocates guest memory and returns
   * its manager; nothing stays allocated on failure.
   *
   * @param layout The guest physical address map.
   * @returns The manager of the new guest memory.
   * @throws {MemoryBuildError} for the first rule broken or step failed
   *   (the OS error as `cause`).
   * @throws {MissingPermissionError} without `--allow-ffi`.
   */
  build(layout: MemoryLayout): GuestMemoryManager {
    const options: BuildOptions = {
      existingBacking: this.#existingBacking,
      vtl0AliasMap: this.#vtl0AliasMap,
      pinMappings: this.#pinMappings,
      prefetchRam: this.#prefetchRam,
      x86LegacySupport: this.#x86LegacySupport,
      privateMemory: this.#privateMemory,
      transparentHugepages: this.#transparentHugepages,
      hugepages: this.#hugepages,
    };
    checkMemoryModes(options);
    const vtl2 = layout.vtl2Range();
    const ramSize = layout.ramSize() + (vtl2?.len ?? 0n);
    const ranges: MemoryRange[] = [...layout.ram()];
    if (vtl2 !== undefined) ranges.push(vtl2);
    const requestedHugepageSize = checkHugepages(options, ramSize, ranges);

    using stack = new DisposableStack();
    const { backing, hugepageSize } = allocateBacking(
      options,
      ramSize,
      ranges,
      requestedHugepageSize,
      stack,
    );
    const maxAddr = addressSpaceEnd(layout, options.vtl0AliasMap);
    const va = stack.use(reserveAddressSpace(maxAddr, hugepageSize));
    const regionManager = stack.use(new RegionManager(va));
    const ramRanges = options.x86LegacySupport ? splitLegacyRam(ranges) : ranges;
    if (options.privateMemory) backPrivateRam(va, ramRanges, options.transparentHugepages);
    const ramRegions = createRamRegions(regionManager, ramRanges, backing, options);

    const manager = newGuestMemoryManager({
      backing,
      hugepageSize,
      va,
      regionManager,
      ramRegions,
      vtl0AliasMapOffset: options.vtl0AliasMap,
      pinMappings: options.pinMappings,
    });
    stack.move();
    return manager;
  }
}

/** A snapshot of the builder's options for one build. */
interface BuildOptions {
  readonly existingBacking: SharedMemoryBacking | undefined;
  readonly vtl0AliasMap: bigint | undefined;
  readonly pinMappings: boolean;
  readonly prefetchRam: boolean;
  readonly x86LegacySupport: boolean;
  readonly privateMemory: boolean;
  readonly transparentHugepages: boolean;
  readonly hugepages: { readonly size: bigint | undefined } | undefined;
}

/** Steps 1 and 2: private memory and transparent hugepage constraints. */
function checkMemoryModes(options: BuildOptions): void {
  if (options.privateMemory) {
    if (options.x86LegacySupport) fail("privateMemoryWithLegacy");
    if (options.existingBacking !== undefined) fail("privateMemoryWithExistingBacking");
  }
  if (options.transparentHugepages) {
    if (!options.privateMemory) fail("thpWithoutPrivateMemory");
    if (!isLinux()) fail("thpUnsupportedPlatform");
  }
}

/** Step 4: hugepage constraints, size and alignment; the page size, if hugepages are on. */
function checkHugepages(
  options: BuildOptions,
  ramSize: bigint,
  ranges: readonly MemoryRange[],
): bigint | undefined {
  if (options.hugepages === undefined) return undefined;
  if (!isLinux()) fail("hugepagesUnsupportedPlatform");
  if (options.privateMemory) fail("hugepagesWithPrivateMemory");
  if (options.existingBacking !== undefined) fail("hugepagesWithExistingBacking");
  if (options.x86LegacySupport) fail("hugepagesWithLegacy");
  const size = validateHugepageSize(
    options.hugepages.size ?? DEFAULT_HUGEPAGE_SIZE,
    hostPageSize(),
  );
  validateHugepageRamAlignment(ramSize, ranges, size);
  return size;
}

/**
 * Step 5: the shared RAM object (none in private mode), owned by `stack`,
 * and the hugepage size it must be mapped with.
 */
function allocateBacking(
  options: BuildOptions,
  ramSize: bigint,
  ranges: readonly MemoryRange[],
  hugepageSize: bigint | undefined,
  stack: DisposableStack,
): { backing: OwnedFd | undefined; hugepageSize: bigint | undefined } {
  if (options.privateMemory) return { backing: undefined, hugepageSize };
  const existing = options.existingBacking;
  if (existing !== undefined) {
    const backing = stack.use(duplicateBacking(existing));
    if (existing.hugepageSize !== undefined) {
      // A hugetlb backing can only be mapped in whole hugepages.
      validateHugepageRamAlignment(ramSize, ranges, existing.hugepageSize);
    }
    const size = backing.size();
    if (size < ramSize) {
      throw new MemoryBuildError({
        kind: "existingBackingTooSmall",
        size: new MemorySize(size),
        ramSize: new MemorySize(ramSize),
      });
    }
    return { backing, hugepageSize: existing.hugepageSize };
  }
  if (ramSize > MAX_HOST_SIZE) {
    throw new MemoryBuildError({ kind: "ramTooLarge", size: new MemorySize(ramSize) });
  }
  const backing = stack.use(
    hugepageSize !== undefined
      ? allocateHugetlbRam(ramSize, hugepageSize)
      : allocateSharedRam(ramSize),
  );
  return { backing, hugepageSize };
}

/** Step 6: the end of guest physical address space, checked against the VTL0 alias map. */
function addressSpaceEnd(layout: MemoryLayout, aliasOffset: bigint | undefined): bigint {
  const vtl2 = layout.vtl2Range();
  const endOfLayout = layout.endOfLayout();
  const maxAddr = vtl2 !== undefined && vtl2.end > endOfLayout ? vtl2.end : endOfLayout;
  if (aliasOffset !== undefined && maxAddr > aliasOffset) fail("aliasMapWontFit");
  return maxAddr;
}

/** Step 7: the host address reservation for `[0, maxAddr)`. */
function reserveAddressSpace(maxAddr: bigint, hugepageSize: bigint | undefined): VaMapper {
  const alignment = hugepageSize !== undefined && hugepageSize > VA_ALIGNMENT
    ? hugepageSize
    : VA_ALIGNMENT;
  try {
    return VaMapper.reserve(maxAddr, alignment);
  } catch (cause) {
    if (cause instanceof MissingPermissionError) throw cause;
    throw new MemoryBuildError({ kind: "vaMapper" }, { cause });
  }
}

/** Step 8: the first RAM range split into the x86 legacy pieces. */
function splitLegacyRam(ranges: readonly MemoryRange[]): MemoryRange[] {
  const first = ranges[0];
  if (first.start !== 0n || first.end < X86_LEGACY_MIN_END) fail("invalidRamForX86");
  // A first range of exactly 1 MiB leaves an empty last piece: no region for it.
  const pieces = splitX86LegacyRam(first).filter((piece) => !piece.isEmpty());
  return [...pieces, ...ranges.slice(1)];
}

/** Step 9: private RAM, anonymous memory in place, named, optionally THP-advised. */
function backPrivateRam(va: VaMapper, ranges: readonly MemoryRange[], thp: boolean): void {
  for (const range of ranges) {
    try {
      va.allocPrivate(range, PRIVATE_RAM_NAME);
    } catch (cause) {
      if (cause instanceof MissingPermissionError) throw cause;
      throw new MemoryBuildError({ kind: "privateRamAlloc", range }, { cause });
    }
  }
  if (!thp) return;
  for (const range of ranges) {
    try {
      va.adviseHugepages(range);
    } catch (cause) {
      warn(`failed to mark RAM range ${range} as THP eligible`, cause);
    }
  }
}

/** Step 10: one mapped RAM region per range, packed into the backing in order. */
function createRamRegions(
  regionManager: RegionManager,
  ranges: readonly MemoryRange[],
  backing: OwnedFd | undefined,
  options: BuildOptions,
): RamRegion[] {
  const params = {
    writable: true,
    executable: true,
    prefetch: options.prefetchRam && !options.privateMemory,
  };
  const ramRegions: RamRegion[] = [];
  let fileOffset = 0n;
  for (const range of ranges) {
    const handle = regionManager.newRegion("ram", range, RAM_PRIORITY, true);
    if (backing !== undefined) {
      handle.addMapping(new MemoryRange(0n, range.len), backing, fileOffset, true);
    }
    handle.map(params);
    ramRegions.push({ range, handle });
    fileOffset += range.len;
  }
  return ramRegions;
}

function fail(kind: SimpleKind): never {
  throw new MemoryBuildError({ kind });
}

/** The build errors that carry no values. */
type SimpleKind =
  | "aliasMapWontFit"
  | "invalidRamForX86"
  | "privateMemoryWithLegacy"
  | "privateMemoryWithExistingBacking"
  | "thpWithoutPrivateMemory"
  | "thpUnsupportedPlatform"
  | "hugepagesUnsupportedPlatform"
  | "hugepagesWithPrivateMemory"
  | "hugepagesWithExistingBacking"
  | "hugepagesWithLegacy";
