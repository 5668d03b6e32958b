/**
 * `fstat` of an open descriptor, reduced to what the library needs: the
 * file type and size.
 *
 * Layout of `struct stat` on x86_64 (`arch/x86/include/uapi/asm/stat.h`):
 * `st_mode` (u32) at byte 24, `st_size` (i64) at byte 48, 144 bytes in all.
 * File type bits from `include/uapi/linux/stat.h`.
 *
 * @module
 */

import { Fcntl } from "./_constants.ts";
import { Errno } from "./_errno.ts";
import { libc } from "./_libc.ts";
import { check, lastError } from "./syscall_error.ts";

const STAT_SIZE = 144;
const ST_MODE_OFFSET = 24;
const ST_SIZE_OFFSET = 48;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;

const buffer = new Uint8Array(STAT_SIZE);
const view = new DataView(buffer.buffer);

/**
 * The size of the regular file (memfds included) open as `fd`, or
 * `undefined` for anything else (a device, where size means nothing).
 * Throws a SyscallError (`EBADF`) for a descriptor that is not open.
 */
export function regularFileSize(fd: number): bigint | undefined {
  check("fstat", libc().fstat(fd, buffer));
  const mode = view.getUint32(ST_MODE_OFFSET, true);
  if ((mode & S_IFMT) !== S_IFREG) return undefined;
  return view.getBigInt64(ST_SIZE_OFFSET, true);
}

/**
 * Whether `fd` was opened for writing (`fcntl(F_GETFL)` access mode
 * `O_WRONLY` or `O_RDWR`): only then can it be mapped `PROT_WRITE`.
 */
export function isWritableDescriptor(fd: number): boolean {
  const flags = check("fcntl(F_GETFL)", libc().fcntl(fd, Fcntl.F_GETFL, 0));
  return (flags & Fcntl.O_ACCMODE) !== Fcntl.O_RDONLY;
}

/**
 * The seals of the file open as `fd` (`fcntl(F_GET_SEALS)`: `F_SEAL_*`
 * bits), or `undefined` when its file system has no seals (`EINVAL`: only
 * memfds and shmem/hugetlbfs files have them). Any other failure throws a
 * SyscallError.
 */
export function fileSeals(fd: number): number | undefined {
  const seals = libc().fcntl(fd, Fcntl.F_GET_SEALS, 0);
  if (seals !== -1) return seals;
  const error = lastError("fcntl(F_GET_SEALS)");
  if (error.errno === Errno.EINVAL) return undefined;
  throw error;
}
