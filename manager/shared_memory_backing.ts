import { OwnedFd } from "../ffi/_owned_fd.ts";
import type { Mappable } from "../mapping/mappable.ts";

/**
 * The object behind guest RAM, handed from one memory manager to the next:
 * give it to `GuestMemoryBuilder.existingBacking` and the new manager sees
 * the same memory contents.
 *
 * It owns its own duplicate of the RAM descriptor, so it stays valid after
 * the manager that produced it is disposed; dispose of it when done (the
 * builder takes its own duplicate). Only one manager should drive a given
 * backing at a time, or the guest sees unpredictable results.
 *
 * @example
 * ```ts ignore
 * import { GuestMemoryBuilder, MemoryLayout } from "../mod.ts";
 * const layout = MemoryLayout.fromGaps(1n << 30n, []);
 * using first = new GuestMemoryBuilder().build(layout);
 * using backing = first.sharedMemoryBacking()!;
 * using second = new GuestMemoryBuilder().existingBacking(backing).build(layout);
 * ```
 */
export class SharedMemoryBacking implements Mappable, Disposable {
  #fd: OwnedFd;
  /**
   * The page size of a hugetlb backing (mappings of it must be aligned to
   * it), or `undefined` for ordinary memory.
   */
  readonly hugepageSize: bigint | undefined;

  private constructor(fd: OwnedFd, hugepageSize: bigint | undefined) {
    this.#fd = fd;
    this.hugepageSize = hugepageSize;
  }

  /**
   * A backing over a duplicate of `mappable`'s descriptor (the caller keeps
   * its own). The file must hold at least as many bytes as the guest RAM it
   * will back. Give `hugepageSize` for a hugetlb file.
   */
  static fromMappable(mappable: Mappable, hugepageSize?: bigint): SharedMemoryBacking {
    // Borrow the caller's descriptor just long enough to duplicate it.
    const borrowed = new OwnedFd(mappable.fd);
    try {
      return new SharedMemoryBacking(borrowed.duplicate(), hugepageSize);
    } finally {
      borrowed.release();
    }
  }

  /**
   * Takes ownership of `fd` (it is closed when the backing is disposed);
   * `hugepageSize` for a hugetlb file.
   */
  static adopt(fd: OwnedFd, hugepageSize?: bigint): SharedMemoryBacking {
    return new SharedMemoryBacking(fd, hugepageSize);
  }

  /**
   * The descriptor of guest RAM; throws once disposed. It belongs to this
   * object: keep the object (not just the number) for as long as you use
   * the descriptor, since a forgotten backing is closed when it is
   * garbage-collected. Use {@linkcode SharedMemoryBacking.duplicate} for a
   * descriptor of your own.
   */
  get fd(): number {
    return this.#fd.fd;
  }

  /** Whether the descriptor is still open. */
  get isOpen(): boolean {
    return this.#fd.isOpen;
  }

  /** A new descriptor of the same memory, owned by the caller. */
  duplicate(): OwnedFd {
    return this.#fd.duplicate();
  }

  /** Closes this backing's descriptor; idempotent. */
  [Symbol.dispose](): void {
    this.#fd.close();
  }
}
