import { MAX_ADDRESS, MemoryRange, PAGE_SIZE } from "./memory_range.ts";
import { MemoryLayoutError } from "./memory_layout_error.ts";

/**
 * The optional parts of a {@linkcode MemoryLayout}: PCI gaps (kept free of
 * RAM like MMIO gaps) and the VTL2 range (above all RAM).
 *
 * @example
 * ```ts
 * import { MemoryRange } from "./memory_range.ts";
 * import type { MemoryLayoutOptions } from "./memory_layout.ts";
 * import assert from "node:assert/strict";
 * const options: MemoryLayoutOptions = {
 *   pciEcamGaps: [new MemoryRange(0xe0000000n, 0xf0000000n)],
 *   vtl2Range: new MemoryRange(0x200000000n, 0x210000000n),
 * };
 * assert.equal(`${options.vtl2Range}`, "0x200000000-0x210000000");
 * ```
 */
export interface MemoryLayoutOptions {
  /** PCI ECAM (configuration space) gaps, sorted and non-overlapping. */
  readonly pciEcamGaps?: readonly MemoryRange[];
  /** PCI MMIO (BAR) gaps, sorted and non-overlapping. */
  readonly pciMmioGaps?: readonly MemoryRange[];
  /** The VTL2 range; must start at or above the end of RAM. */
  readonly vtl2Range?: MemoryRange;
}

/**
 * Throws `invalid memory or MMIO ranges` unless `ranges` is sorted by start,
 * holds no empty range, and no two ranges overlap.
 */
function validateRanges(ranges: readonly MemoryRange[]): void {
  for (let i = 0; i < ranges.length; i++) {
    const range = ranges[i];
    if (range.isEmpty()) throw new MemoryLayoutError("badRanges");
    if (i > 0) {
      const previous = ranges[i - 1];
      if (previous.compare(range) > 0 || previous.overlaps(range)) {
        throw new MemoryLayoutError("badRanges");
      }
    }
  }
}

function sorted(ranges: readonly MemoryRange[]): MemoryRange[] {
  return [...ranges].sort((a, b) => a.compare(b));
}

function frozen(ranges: readonly MemoryRange[]): readonly MemoryRange[] {
  return Object.freeze([...ranges]);
}

/**
 * The guest physical address map: where RAM is, where the MMIO and PCI gaps
 * are, and the optional VTL2 range. Immutable once built; every constructor
 * validates and throws a {@linkcode MemoryLayoutError}.
 *
 * Rules:
 * - the RAM size is non-zero and 4 KiB aligned (`invalid memory size`);
 * - each gap list is sorted, holds no empty range and has no overlap, and
 *   all gaps together do not overlap (`invalid memory or MMIO ranges`);
 * - RAM, gaps and the VTL2 range together do not overlap (same message);
 * - the VTL2 range does not start below the end of RAM
 *   (`vtl2 range is below end of ram`).
 *
 * @example
 * ```ts
 * import { MemoryLayout, MemoryRange } from "../mod.ts";
 * import assert from "node:assert/strict";
 * const layout = MemoryLayout.fromGaps(4n << 30n, [new MemoryRange(0xe0000000n, 0x100000000n)]);
 * assert.deepEqual(layout.ram().map(String), ["0x0-0xe0000000", "0x100000000-0x120000000"]);
 * assert.equal(layout.endOfRam(), 0x120000000n);
 * ```
 */
export class MemoryLayout {
  readonly #ram: readonly MemoryRange[];
  readonly #mmio: readonly MemoryRange[];
  readonly #pciEcam: readonly MemoryRange[];
  readonly #pciMmio: readonly MemoryRange[];
  readonly #vtl2: MemoryRange | undefined;

  private constructor(
    ram: readonly MemoryRange[],
    mmio: readonly MemoryRange[],
    pciEcam: readonly MemoryRange[],
    pciMmio: readonly MemoryRange[],
    vtl2: MemoryRange | undefined,
  ) {
    this.#ram = frozen(ram);
    this.#mmio = frozen(mmio);
    this.#pciEcam = frozen(pciEcam);
    this.#pciMmio = frozen(pciMmio);
    this.#vtl2 = vtl2;
  }

  /**
   * Lays `ramSize` bytes of RAM out from address 0 upward, skipping the MMIO
   * and PCI gaps, until the size is used up.
   *
   * @example
   * ```ts
   * import { MemoryLayout, MemoryRange } from "../mod.ts";
   * import assert from "node:assert/strict";
   * const layout = MemoryLayout.fromGaps(
   *   4n << 30n,
   *   [new MemoryRange(0xe0000000n, 0x100000000n)],
   *   { vtl2Range: new MemoryRange(0x200000000n, 0x202000000n) },
   * );
   * assert.equal(layout.ram().length, 2);
   * assert.equal(layout.ramSize(), 4n << 30n);
   * ```
   */
  static fromGaps(
    ramSize: bigint,
    mmioGaps: readonly MemoryRange[],
    options: MemoryLayoutOptions = {},
  ): MemoryLayout {
    if (ramSize <= 0n || ramSize % PAGE_SIZE !== 0n) throw new MemoryLayoutError("badSize");
    const gaps = MemoryLayout.#validateGaps(mmioGaps, options);

    const ram: MemoryRange[] = [];
    let cursor = 0n;
    let remaining = ramSize;
    for (const gap of gaps) {
      if (remaining === 0n) break;
      if (gap.start > cursor) {
        const room = gap.start - cursor;
        const take = room < remaining ? room : remaining;
        ram.push(new MemoryRange(cursor, cursor + take));
        remaining -= take;
      }
      cursor = gap.end;
    }
    if (remaining > 0n) {
      if (remaining > MAX_ADDRESS - cursor) throw new MemoryLayoutError("badSize");
      ram.push(new MemoryRange(cursor, cursor + remaining));
    }
    return MemoryLayout.#build(ram, mmioGaps, options);
  }

  /**
   * Uses explicit RAM ranges (sorted, non-empty, non-overlapping) instead of
   * a size; validated like {@linkcode MemoryLayout.fromGaps}.
   *
   * @example
   * ```ts
   * import { MemoryLayout, MemoryRange } from "../mod.ts";
   * import assert from "node:assert/strict";
   * const layout = MemoryLayout.fromRanges(
   *   [new MemoryRange(0n, 0x80000000n), new MemoryRange(0x100000000n, 0x180000000n)],
   *   [new MemoryRange(0xe0000000n, 0x100000000n)],
   * );
   * assert.equal(layout.ramSize(), 4n << 30n);
   * ```
   */
  static fromRanges(
    ram: readonly MemoryRange[],
    mmioGaps: readonly MemoryRange[],
    options: MemoryLayoutOptions = {},
  ): MemoryLayout {
    validateRanges(ram);
    MemoryLayout.#validateGaps(mmioGaps, options);
    return MemoryLayout.#build(ram, mmioGaps, options);
  }

  /** Validates each gap list, then all of them together; returns them all sorted. */
  static #validateGaps(
    mmioGaps: readonly MemoryRange[],
    options: MemoryLayoutOptions,
  ): MemoryRange[] {
    const ecam = options.pciEcamGaps ?? [];
    const pciMmio = options.pciMmioGaps ?? [];
    validateRanges(mmioGaps);
    validateRanges(ecam);
    validateRanges(pciMmio);
    const all = sorted([...mmioGaps, ...ecam, ...pciMmio]);
    validateRanges(all);
    return all;
  }

  static #build(
    ram: readonly MemoryRange[],
    mmioGaps: readonly MemoryRange[],
    options: MemoryLayoutOptions,
  ): MemoryLayout {
    const ecam = options.pciEcamGaps ?? [];
    const pciMmio = options.pciMmioGaps ?? [];
    const vtl2 = options.vtl2Range;
    const everything = [...ram, ...mmioGaps, ...ecam, ...pciMmio];
    if (vtl2 !== undefined) everything.push(vtl2);
    validateRanges(sorted(everything));
    if (ram.length === 0) throw new MemoryLayoutError("badSize");
    if (vtl2 !== undefined && vtl2.start < ram[ram.length - 1].end) {
      throw new MemoryLayoutError("vtl2BelowRam");
    }
    return new MemoryLayout(ram, mmioGaps, ecam, pciMmio, vtl2);
  }

  /** The RAM ranges, sorted by address. */
  ram(): readonly MemoryRange[] {
    return this.#ram;
  }

  /** Total RAM in bytes (the VTL2 range not included). */
  ramSize(): bigint {
    let total = 0n;
    for (const range of this.#ram) total += range.len;
    return total;
  }

  /** The MMIO gaps, sorted by address. */
  mmio(): readonly MemoryRange[] {
    return this.#mmio;
  }

  /** The PCI ECAM gaps, sorted by address. */
  pciEcam(): readonly MemoryRange[] {
    return this.#pciEcam;
  }

  /** The PCI MMIO gaps, sorted by address. */
  pciMmio(): readonly MemoryRange[] {
    return this.#pciMmio;
  }

  /** The VTL2 range, if any. */
  vtl2Range(): MemoryRange | undefined {
    return this.#vtl2;
  }

  /** The end of the last RAM range. */
  endOfRam(): bigint {
    return this.#ram[this.#ram.length - 1].end;
  }

  /** The highest end of any RAM, MMIO or PCI range (the VTL2 range not included). */
  endOfLayout(): bigint {
    let end = this.endOfRam();
    for (const list of [this.#mmio, this.#pciEcam, this.#pciMmio]) {
      const last = list[list.length - 1];
      if (last !== undefined && last.end > end) end = last.end;
    }
    return end;
  }

  /** A plain description, for `JSON.stringify` and inspection. */
  toJSON(): {
    ram: string[];
    mmio: string[];
    pciEcam: string[];
    pciMmio: string[];
    vtl2: string | undefined;
  } {
    return {
      ram: this.#ram.map(String),
      mmio: this.#mmio.map(String),
      pciEcam: this.#pciEcam.map(String),
      pciMmio: this.#pciMmio.map(String),
      vtl2: this.#vtl2?.toString(),
    };
  }
}
