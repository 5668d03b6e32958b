import { DisposedError } from "../diagnostics/disposed_error.ts";
import { Memfd } from "../ffi/_constants.ts";
import { OwnedFd } from "../ffi/_owned_fd.ts";
import { PAGE_SIZE } from "../layout/memory_range.ts";
import type { Mappable } from "../mapping/mappable.ts";
import { GUEST_RAM_SEALS, newMemfd } from "./_ram_backing.ts";

let adopt: (fd: OwnedFd, hugepageSize: bigint | undefined) => SharedMemoryBacking;
let fdOf: (backing: SharedMemoryBacking) => OwnedFd;

/** A new descriptor of `backing`'s memory, owned by the caller. */
export function duplicateBacking(backing: SharedMemoryBacking): OwnedFd {
  return fdOf(backing).duplicate();
}

/** A backing that owns `fd` (for the manager; `hugepageSize` for a hugetlb file). */
export function adoptBacking(fd: OwnedFd, hugepageSize?: bigint): SharedMemoryBacking {
  return adopt(fd, hugepageSize);
}

/**
 * A shared memory object (a sealed memfd) that can back guest memory: guest
 * RAM handed from one manager to the next, or device memory such as a ROM
 * image or a framebuffer that the host reads and writes too.
 *
 * - {@linkcode SharedMemoryBacking.create} makes a new one of a size,
 *   optionally filled, sealed against shrinking and growing (so no mapping
 *   of it can ever fault for lack of pages); map it with
 *   `DeviceMemoryRegion.map`, read and write it from the host with
 *   {@linkcode SharedMemoryBacking.read} and {@linkcode SharedMemoryBacking.write}.
 * - `GuestMemoryManager.sharedMemoryBacking()` gives guest RAM's; pass it to
 *   `GuestMemoryBuilder.existingBacking` and the new manager sees the same
 *   memory. Only one manager should drive a given RAM backing at a time.
 *
 * It owns its own descriptor, so it stays valid after the manager that
 * produced it is disposed; dispose of it when done (mappings made from it
 * keep the memory alive).
 *
 * @example
 * ```ts
 * import { SharedMemoryBacking } from "../mod.ts";
 * import assert from "node:assert/strict";
 *
 * using rom = SharedMemoryBacking.create(0x1000n, {
 *   name: "option-rom",
 *   contents: new Uint8Array([0x55, 0xaa]),
 * });
 * assert.deepEqual(rom.read(0n, 3), new Uint8Array([0x55, 0xaa, 0]));
 * rom.write(2n, new Uint8Array([8]));
 * assert.equal(rom.read(2n, 1)[0], 8);
 * assert.equal(rom.size, 0x1000n);
 * ```
 */
export class SharedMemoryBacking implements Mappable, Disposable {
  #fd: OwnedFd;
  /**
   * The page size of a hugetlb backing (mappings of it must be aligned to
   * it), or `undefined` for ordinary memory.
   */
  readonly hugepageSize: bigint | undefined;

  static {
    adopt = (fd, hugepageSize) => new SharedMemoryBacking(fd, hugepageSize);
    fdOf = (backing) => backing.#open();
  }

  private constructor(fd: OwnedFd, hugepageSize: bigint | undefined) {
    this.#fd = fd;
    this.hugepageSize = hugepageSize;
  }

  /**
   * A new sealed memfd of `size` bytes, zero-filled, then `contents` written
   * at offset 0.
   *
   * @param size Bytes, a positive multiple of 4 KiB.
   * @param options `name`: shown as `/memfd:{name}` in /proc/self/maps
   *   (default `shared-memory`); `contents`: initial bytes, at most `size`.
   * @returns The backing, owned by the caller.
   * @throws {RangeError} for a bad size or contents larger than `size`.
   * @throws {SyscallError} when the kernel refuses (`memfd_create`, `ftruncate`).
   */
  static create(
    size: bigint,
    options: { readonly name?: string; readonly contents?: Uint8Array } = {},
  ): SharedMemoryBacking {
    if (size <= 0n || size % PAGE_SIZE !== 0n) {
      throw new RangeError(`shared memory size ${size} is not a positive multiple of 4096`);
    }
    const contents = options.contents;
    if (contents !== undefined && BigInt(contents.length) > size) {
      throw new RangeError(
        `contents of ${contents.length} bytes do not fit in ${size} bytes of shared memory`,
      );
    }
    const fd = newMemfd(
      options.name ?? "shared-memory",
      Memfd.MFD_CLOEXEC | Memfd.MFD_ALLOW_SEALING,
      (fd) => {
        fd.truncate(size);
        fd.addSeals(GUEST_RAM_SEALS);
        if (contents !== undefined && contents.length > 0) fd.writeAt(0n, new Uint8Array(contents));
      },
    );
    return new SharedMemoryBacking(fd, undefined);
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
   * The descriptor of guest RAM; throws once disposed. It belongs to this
   * object: keep the object (not just the number) for as long as you use
   * the descriptor, since a forgotten backing is closed when it is
   * garbage-collected. Use {@linkcode SharedMemoryBacking.duplicate} for a
   * descriptor of your own.
   */
  get fd(): number {
    return this.#open().fd;
  }

  /** Whether the descriptor is still open. */
  get isOpen(): boolean {
    return this.#fd.isOpen;
  }

  /** The size of the object in bytes. */
  get size(): bigint {
    return this.#open().size();
  }

  /**
   * Copies bytes out of the object (`pread`).
   *
   * @param offset Where to start.
   * @param length How many bytes.
   * @returns A new array of `length` bytes.
   * @throws {RangeError} when the range reaches past the end.
   */
  read(offset: bigint, length: number): Uint8Array<ArrayBuffer> {
    const out = new Uint8Array(length);
    this.#open().readAt(offset, out);
    return out;
  }

  /**
   * Copies `bytes` into the object at `offset` (`pwrite`); the guest sees
   * them at once wherever the object is mapped.
   *
   * @param offset Where to start.
   * @param bytes What to write.
   * @throws {RangeError} when the range reaches past the end.
   */
  write(offset: bigint, bytes: Uint8Array): void {
    const fd = this.#open();
    if (offset < 0n || offset + BigInt(bytes.length) > fd.size()) {
      throw new RangeError(
        `write of ${bytes.length} bytes at ${offset} is outside the ${fd.size()}-byte object`,
      );
    }
    fd.writeAt(offset, new Uint8Array(bytes));
  }

  #open(): OwnedFd {
    if (!this.#fd.isOpen) throw new DisposedError({ object: "shared memory backing" });
    return this.#fd;
  }

  /** Closes this backing's descriptor; idempotent. */
  [Symbol.dispose](): void {
    this.#fd.close();
  }
}
