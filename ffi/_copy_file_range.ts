/**
 * `copy_file_range` between two descriptors, looped until every byte is
 * copied (short copies and `EINTR` continue), each failure a
 * {@linkcode SyscallError}.
 *
 * @module
 */

import { Errno } from "./_errno.ts";
import { libc } from "./_libc.ts";
import { lastError } from "./syscall_error.ts";

/**
 * Copies `length` bytes from `fdIn` at `offsetIn` to `fdOut` at `offsetOut`
 * inside the kernel (tmpfs copies page by page, no user-space buffer).
 * Throws a SyscallError (`EXDEV`, `EINVAL` for file systems that cannot,
 * such as hugetlbfs as the destination); a copy that reaches the end of the
 * source is a `RangeError`.
 */
export function copyFileRange(
  fdIn: number,
  offsetIn: bigint,
  fdOut: number,
  offsetOut: bigint,
  length: bigint,
): void {
  const inOff = new BigInt64Array([offsetIn]);
  const outOff = new BigInt64Array([offsetOut]);
  const inBytes = new Uint8Array(inOff.buffer);
  const outBytes = new Uint8Array(outOff.buffer);
  let left = length;
  while (left > 0n) {
    const n = libc().copy_file_range(fdIn, inBytes, fdOut, outBytes, left, 0);
    if (n === -1n) {
      const error = lastError("copy_file_range");
      if (error.errno === Errno.EINTR) continue;
      throw error;
    }
    if (n === 0n) {
      throw new RangeError(`copy_file_range reached the end of the source at ${inOff[0]}`);
    }
    left -= n;
  }
}
