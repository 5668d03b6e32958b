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
import { libc } from "./_libc.ts";
import { check } from "./syscall_error.ts";

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
