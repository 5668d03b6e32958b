import { hex } from "./_hex.ts";
/**
 * The guest page size every range is aligned to: 4 KiB.
 *
 * @example
 * ```ts
 * import { PAGE_SIZE } from "./memory_range.ts";
 * import assert from "node:assert/strict";
 * assert.equal(PAGE_SIZE, 4096n);
 * ```
 */
export const PAGE_SIZE: bigint = 0x1000n;

/**
 * The highest address a range may reach: 2^64 - 4096.
 *
 * @example
 * ```ts
 * import { MAX_ADDRESS } from "./memory_range.ts";
 * import assert from "node:assert/strict";
 * assert.equal(MAX_ADDRESS, 0xfffffffffffff000n);
 * ```
 */
export const MAX_ADDRESS: bigint = (1n << 64n) - PAGE_SIZE;

const PAGE_MASK = PAGE_SIZE - 1n;

/**
 * A half-open range `[start, end)` of guest physical addresses, both ends
 * 4 KiB aligned, `start <= end <= MAX_ADDRESS`. Immutable.
 *
 * Shown as `0x<start>-0x<end>` in lower-case hex.
 *
 * @example
 * ```ts
 * import { MemoryRange } from "./memory_range.ts";
 * import assert from "node:assert/strict";
 * const vga = new MemoryRange(0xa0000n, 0xc0000n);
 * assert.equal(`${vga}`, "0xa0000-0xc0000");
 * assert.equal(vga.len, 131072n);
 * ```
 */
export class MemoryRange {
  /** The empty range at 0. */
  static readonly EMPTY: MemoryRange = new MemoryRange(0n, 0n);

  /** First address in the range. */
  readonly start: bigint;
  /** First address past the range. */
  readonly end: bigint;

  /**
   * Creates `[start, end)`; throws a `RangeError` naming the value for an
   * unaligned end, `start > end`, or an end past {@linkcode MAX_ADDRESS}.
   */
  constructor(start: bigint, end: bigint) {
    if (typeof start !== "bigint" || typeof end !== "bigint") {
      throw new TypeError(
        `memory range ends must be bigint, got ${typeof start} and ${typeof end}`,
      );
    }
    if (start < 0n || (start & PAGE_MASK) !== 0n) {
      throw new RangeError(`memory range start ${hex(start)} is not 4 KiB aligned`);
    }
    if (end < 0n || (end & PAGE_MASK) !== 0n) {
      throw new RangeError(`memory range end ${hex(end)} is not 4 KiB aligned`);
    }
    if (start > end) {
      throw new RangeError(`memory range start ${hex(start)} is after its end ${hex(end)}`);
    }
    if (end > MAX_ADDRESS) {
      throw new RangeError(
        `memory range end ${hex(end)} is past the maximum address ${hex(MAX_ADDRESS)}`,
      );
    }
    this.start = start;
    this.end = end;
  }

  /** `[start, start + len)`. */
  static fromLength(start: bigint, len: bigint): MemoryRange {
    return new MemoryRange(start, start + len);
  }

  /** Length in bytes. */
  get len(): bigint {
    return this.end - this.start;
  }

  /** Whether the range holds no byte. */
  isEmpty(): boolean {
    return this.start === this.end;
  }

  /** Whether the two ranges share at least one byte (an empty range overlaps nothing). */
  overlaps(other: MemoryRange): boolean {
    return this.start < other.end && other.start < this.end && this.start < this.end &&
      other.start < other.end;
  }

  /** Whether `other` lies fully inside (an empty range on a boundary counts). */
  contains(other: MemoryRange): boolean {
    return this.start <= other.start && other.end <= this.end;
  }

  /** Whether `addr` is in `[start, end)`. */
  containsAddr(addr: bigint): boolean {
    return this.start <= addr && addr < this.end;
  }

  /** `addr - start`; throws a `RangeError` when `addr` is not in the range. */
  offsetOf(addr: bigint): bigint {
    if (!this.containsAddr(addr)) throw new RangeError(`address ${hex(addr)} is not in ${this}`);
    return addr - this.start;
  }

  /** The common part, or an empty range when they do not overlap. */
  intersection(other: MemoryRange): MemoryRange {
    const start = this.start > other.start ? this.start : other.start;
    const end = this.end < other.end ? this.end : other.end;
    return start < end ? new MemoryRange(start, end) : MemoryRange.EMPTY;
  }

  /** Splits at page-aligned `offset` (0..len) into `[start, start+offset)` and the rest. */
  splitAtOffset(offset: bigint): [MemoryRange, MemoryRange] {
    if (offset < 0n || offset > this.len || (offset & PAGE_MASK) !== 0n) {
      throw new RangeError(`split offset ${hex(offset)} is not a page-aligned offset into ${this}`);
    }
    const mid = this.start + offset;
    return [new MemoryRange(this.start, mid), new MemoryRange(mid, this.end)];
  }

  /** Same start and end. */
  equals(other: MemoryRange): boolean {
    return this.start === other.start && this.end === other.end;
  }

  /** Orders by start, then by end: negative, zero or positive. */
  compare(other: MemoryRange): number {
    if (this.start !== other.start) return this.start < other.start ? -1 : 1;
    if (this.end !== other.end) return this.end < other.end ? -1 : 1;
    return 0;
  }

  /** `0x<start>-0x<end>`. */
  toString(): string {
    return `${hex(this.start)}-${hex(this.end)}`;
  }

  /** The display form, for `JSON.stringify`. */
  toJSON(): string {
    return this.toString();
  }
}

/**
 * `ranges` minus `gaps`; both sorted by start and internally non-overlapping.
 * The result is sorted and holds no empty range.
 *
 * @example
 * ```ts
 * import { MemoryRange, subtractRanges } from "./memory_range.ts";
 * import assert from "node:assert/strict";
 * const left = subtractRanges(
 *   [new MemoryRange(0n, 0x10000n)],
 *   [new MemoryRange(0x4000n, 0x8000n)],
 * );
 * assert.deepEqual(left.map(String), ["0x0-0x4000", "0x8000-0x10000"]);
 * ```
 */
export function subtractRanges(
  ranges: Iterable<MemoryRange>,
  gaps: Iterable<MemoryRange>,
): MemoryRange[] {
  const gapList = [...gaps];
  const out: MemoryRange[] = [];
  let g = 0;
  for (const range of ranges) {
    let start = range.start;
    const end = range.end;
    while (g < gapList.length && gapList[g].end <= start) g++;
    let k = g;
    while (start < end && k < gapList.length && gapList[k].start < end) {
      const gap = gapList[k];
      if (gap.start > start) out.push(new MemoryRange(start, gap.start));
      if (gap.end > start) start = gap.end;
      k++;
    }
    if (start < end) out.push(new MemoryRange(start, end));
  }
  return out;
}
