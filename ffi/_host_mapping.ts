import { DisposedError } from "../diagnostics/disposed_error.ts";
import { Mman } from "./_constants.ts";
import { hostBytes } from "./_host_memory.ts";
import { libc } from "./_libc.ts";
import { mmap, munmap } from "./_mman.ts";

const registry = new FinalizationRegistry<[bigint, bigint]>(([addr, length]) => {
  // Safety net only: a HostMapping that was never disposed.
  libc().munmap(addr, length);
});

let live = 0;

/**
 * How many {@linkcode HostMapping}s are mapped now (for leak checks in tests).
 */
export function liveHostMappingCount(): number {
  return live;
}

/**
 * An owned range of host virtual memory from `mmap`, unmapped by
 * `Symbol.dispose`.
 *
 * @example
 * ```ts ignore
 * import { HostMapping } from "./_host_mapping.ts";
 * using m = HostMapping.anonymous(4096n, true);
 * m.bytes()[0] = 42;
 * ```
 */
export class HostMapping implements Disposable {
  #address: bigint;
  /** Length in bytes. */
  readonly length: bigint;

  /** Takes ownership of `[address, address + length)`, already mapped. */
  constructor(address: bigint, length: bigint) {
    this.#address = address;
    this.length = length;
    registry.register(this, [address, length], this);
    live++;
  }

  /** A private anonymous read(/write) mapping of `length` bytes. */
  static anonymous(length: bigint, writable: boolean): HostMapping {
    const prot = Mman.PROT_READ | (writable ? Mman.PROT_WRITE : 0);
    const flags = Mman.MAP_PRIVATE | Mman.MAP_ANONYMOUS;
    return new HostMapping(mmap(0n, length, prot, flags, -1, 0n), length);
  }

  /** A shared mapping of `length` bytes of `fd` from `offset`. */
  static shared(fd: number, offset: bigint, length: bigint, prot: number): HostMapping {
    return new HostMapping(mmap(0n, length, prot, Mman.MAP_SHARED, fd, offset), length);
  }

  /**
   * An inaccessible reservation (`PROT_NONE`, `MAP_NORESERVE`) of `length`
   * bytes, starting at a multiple of `alignment` (a power of two) when one
   * larger than a page is given: hugetlb files can only be mapped at
   * hugepage-aligned addresses.
   */
  static reserve(length: bigint, alignment = 0n): HostMapping {
    const flags = Mman.MAP_PRIVATE | Mman.MAP_ANONYMOUS | Mman.MAP_NORESERVE;
    if (alignment <= 0x1000n) {
      return new HostMapping(mmap(0n, length, Mman.PROT_NONE, flags, -1, 0n), length);
    }
    // Over-reserve, then give back the slack on both sides of the aligned part.
    const total = length + alignment;
    const raw = mmap(0n, total, Mman.PROT_NONE, flags, -1, 0n);
    const start = (raw + alignment - 1n) & ~(alignment - 1n);
    try {
      if (start > raw) munmap(raw, start - raw);
      if (raw + total > start + length) munmap(start + length, raw + total - (start + length));
    } catch (error) {
      // Nothing may stay reserved: unmapping what is already gone is no error.
      libc().munmap(raw, total);
      throw error;
    }
    return new HostMapping(start, length);
  }

  /**
   * Maps `length` bytes of `fd` from `fileOffset` (shared) over
   * `[offset, offset + length)` of this mapping (`MAP_FIXED`: what was
   * there is replaced; unmapping this mapping unmaps it too).
   */
  mapFileAt(offset: bigint, length: bigint, fd: number, fileOffset: bigint, prot: number): void {
    if (offset < 0n || length <= 0n || offset + length > this.length) {
      throw new RangeError(`range ${offset}+${length} is outside the ${this.length}-byte mapping`);
    }
    mmap(this.address + offset, length, prot, Mman.MAP_SHARED | Mman.MAP_FIXED, fd, fileOffset);
  }

  /** The start address; throws once unmapped. */
  get address(): bigint {
    if (this.#address === 0n) throw new DisposedError({ object: "host mapping" });
    return this.#address;
  }

  /** Whether the mapping is still owned. */
  get isMapped(): boolean {
    return this.#address !== 0n;
  }

  /**
   * A byte view of `[offset, offset + length)` of the mapping. Only valid
   * while that part is mapped with read access.
   */
  bytes(offset = 0n, length: bigint = this.length - offset): Uint8Array<ArrayBuffer> {
    if (offset < 0n || length < 0n || offset + length > this.length) {
      throw new RangeError(`view ${offset}+${length} is outside the ${this.length}-byte mapping`);
    }
    return hostBytes(this.address + offset, length);
  }

  /**
   * Gives the range up without unmapping it: it becomes private anonymous
   * read-write memory (no swap reservation, no pages until touched) that
   * nobody owns, so that a thread still inside an access to it cannot
   * fault. For disposal while a reader is stuck; the address range leaks.
   */
  abandonAccessible(): void {
    if (this.#address === 0n) return;
    const address = this.#address;
    this.#address = 0n;
    registry.unregister(this);
    live--;
    const flags = Mman.MAP_PRIVATE | Mman.MAP_ANONYMOUS | Mman.MAP_FIXED | Mman.MAP_NORESERVE;
    mmap(address, this.length, Mman.PROT_READ | Mman.PROT_WRITE, flags, -1, 0n);
  }

  /**
   * `munmap`; idempotent. When `munmap` fails, the mapping stays owned (and
   * mapped): the error is thrown and unmapping can be tried again.
   */
  unmap(): void {
    if (this.#address === 0n) return;
    munmap(this.#address, this.length);
    this.#address = 0n;
    registry.unregister(this);
    live--;
  }

  /** Unmaps the range. */
  [Symbol.dispose](): void {
    this.unmap();
  }
}
