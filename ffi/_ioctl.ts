/**
 * `ioctl` for the KVM wrappers: the two argument forms, each failure a
 * {@linkcode SyscallError} named after the request (`ioctl(KVM_RUN)`), so
 * that code outside `ffi/` never sees a raw result or errno.
 *
 * @module
 */

import { Errno } from "./_errno.ts";
import { libc } from "./_libc.ts";
import { lastError } from "./syscall_error.ts";

/** Whether to call again when the request fails with `EINTR`. */
export type EintrPolicy = "retry" | "throw";

/**
 * `ioctl(fd, request, arg)` with a pointer to `arg` (a struct laid out by
 * the caller, read and written in place). Returns the non-negative result.
 */
export function ioctlStruct(
  name: string,
  fd: number,
  request: bigint,
  arg: Uint8Array<ArrayBuffer>,
  eintr: EintrPolicy = "throw",
): number {
  for (;;) {
    const result = libc().ioctl(fd, request, arg);
    if (result !== -1) return result;
    const error = lastError(`ioctl(${name})`);
    if (eintr === "throw" || error.errno !== Errno.EINTR) throw error;
  }
}

/** `ioctl(fd, request, arg)` with an integer `arg`. Returns the non-negative result. */
export function ioctlValue(
  name: string,
  fd: number,
  request: bigint,
  arg: bigint,
  eintr: EintrPolicy = "throw",
): number {
  for (;;) {
    const result = libc().ioctl_int(fd, request, arg);
    if (result !== -1) return result;
    const error = lastError(`ioctl(${name})`);
    if (eintr === "throw" || error.errno !== Errno.EINTR) throw error;
  }
}
