import { DisposedError } from "../diagnostics/disposed_error.ts";
import { Fcntl, Memfd, Seek } from "./_constants.ts";
import { cString, libc } from "./_libc.ts";
import { Errno } from "./_errno.ts";
import { check, checkBig, checkRestarting, lastError } from "./syscall_error.ts";

const registry = new FinalizationRegistry<number>((fd) => {
  // Safety net only: an OwnedFd that was never disposed.
  libc().close(fd);
});

/**
 * An owned file descriptor, closed by `Symbol.dispose` (so `using` works).
 *
 * A `FinalizationRegistry` closes a forgotten one as a safety net; do not
 * rely on it.
 *
 * @example
 * ```ts ignore
 * import { OwnedFd } from "./_owned_fd.ts";
 * using fd = OwnedFd.memfd("scratch", 0);
 * fd.truncate(4096n);
 * console.log(fd.size()); // 4096n
 * ```
 */
export class OwnedFd implements Disposable {
  #fd: number;

  /** Takes ownership of the raw descriptor `fd`. */
  constructor(fd: number) {
    this.#fd = fd;
    registry.register(this, fd, this);
  }

  /** `memfd_create(name, flags)`: a new anonymous memory file. */
  static memfd(name: string, flags: number): OwnedFd {
    return new OwnedFd(check("memfd_create", libc().memfd_create(cString(name), flags)));
  }

  /** `open(path, flags)` (`O_CLOEXEC` is always added). */
  static open(path: string, flags: number): OwnedFd {
    return new OwnedFd(check("open", libc().open(cString(path), flags | Fcntl.O_CLOEXEC, 0)));
  }

  /** The raw descriptor; throws once closed. */
  get fd(): number {
    if (this.#fd < 0) throw new DisposedError({ object: "file descriptor" });
    return this.#fd;
  }

  /** Whether the descriptor is still open (owned). */
  get isOpen(): boolean {
    return this.#fd >= 0;
  }

  /** `dup(fd)` with `FD_CLOEXEC`: a second owner of the same open file. */
  duplicate(): OwnedFd {
    return new OwnedFd(
      check("fcntl(F_DUPFD_CLOEXEC)", libc().fcntl(this.fd, Fcntl.F_DUPFD_CLOEXEC, 0)),
    );
  }

  /** `ftruncate(fd, length)`, repeated on `EINTR` (a signal arrived while it waited). */
  truncate(length: bigint): void {
    const fd = this.fd;
    checkRestarting("ftruncate", () => libc().ftruncate(fd, length));
  }

  /**
   * `fallocate(fd, mode, offset, length)`, repeated when a signal interrupts
   * it (`EINTR`: hugetlbfs stops between pages when a signal is pending; the
   * pages allocated so far stay, so the next call only does the rest).
   */
  allocate(mode: number, offset: bigint, length: bigint): void {
    const fd = this.fd;
    checkRestarting("fallocate", () => libc().fallocate(fd, mode, offset, length));
  }

  /** The file size, by `lseek(fd, 0, SEEK_END)`. */
  size(): bigint {
    return checkBig("lseek", libc().lseek(this.fd, 0n, Seek.SEEK_END));
  }

  /**
   * `pread` until `buffer` is full (short reads and `EINTR` continue); a
   * read past the end of the file is a `RangeError`.
   */
  readAt(offset: bigint, buffer: Uint8Array<ArrayBuffer>): void {
    this.#transfer("pread", offset, buffer);
  }

  /** `pwrite` all of `bytes` at `offset` (short writes and `EINTR` continue). */
  writeAt(offset: bigint, bytes: Uint8Array<ArrayBuffer>): void {
    this.#transfer("pwrite", offset, bytes);
  }

  #transfer(call: "pread" | "pwrite", offset: bigint, buffer: Uint8Array<ArrayBuffer>): void {
    let done = 0;
    while (done < buffer.length) {
      const part = done === 0 ? buffer : buffer.subarray(done);
      const n = libc()[call](this.fd, part, BigInt(part.length), offset + BigInt(done));
      if (n === -1n) {
        const error = lastError(call);
        if (error.errno === Errno.EINTR) continue;
        throw error;
      }
      if (n === 0n) {
        throw new RangeError(`${call} reached the end of the file at ${offset + BigInt(done)}`);
      }
      done += Number(n);
    }
  }

  /** `fcntl(fd, F_ADD_SEALS, seals)`. */
  addSeals(seals: number): void {
    check("fcntl(F_ADD_SEALS)", libc().fcntl(this.fd, Fcntl.F_ADD_SEALS, seals));
  }

  /** `fcntl(fd, F_GET_SEALS)`. */
  seals(): number {
    return check("fcntl(F_GET_SEALS)", libc().fcntl(this.fd, Fcntl.F_GET_SEALS, 0));
  }

  /** Gives up ownership and returns the raw descriptor (the caller closes it). */
  release(): number {
    const fd = this.fd;
    registry.unregister(this);
    this.#fd = -1;
    return fd;
  }

  /** `close(fd)`; idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    registry.unregister(this);
    check("close", libc().close(fd));
  }

  /** Closes the descriptor. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** The memfd hugepage size field: 6 bits of log2(page size) (`MFD_HUGE_MASK`). */
const MFD_HUGE_MASK = 0x3f;

/**
 * memfd flags for a hugetlb file of `pageSize` bytes per page
 * (`include/uapi/linux/memfd.h`): `flags | MFD_HUGETLB | log2(pageSize) <<
 * MFD_HUGE_SHIFT`, as the unsigned 32-bit value `memfd_create` takes. The
 * size field is added arithmetically: from 4 GiB pages (log2 32) on, a
 * JavaScript shift would overflow into a negative int32. The kernel, not
 * this function, judges whether the size exists (ENODEV when it does not).
 * A size whose log2 does not fit the 6-bit field is a `RangeError`.
 */
export function hugetlbMemfdFlags(pageSize: bigint, flags = 0): number {
  const log2 = pageSize.toString(2).length - 1;
  if (pageSize <= 0n || log2 > MFD_HUGE_MASK) {
    throw new RangeError(`hugepage size ${pageSize} does not fit the memfd flags`);
  }
  return ((flags | Memfd.MFD_HUGETLB) >>> 0) + log2 * 2 ** Memfd.MFD_HUGE_SHIFT;
}
