import { Errno, errnoName } from "./_errno.ts";
import { lastErrno, strerror } from "./_libc.ts";

/**
 * A failed libc call, typed by its errno.
 *
 * `message` is the C library's text for the error (`Cannot allocate
 * memory`), exactly as `strerror` gives it, so a wrapping error can show its
 * cause as the OS says it. `syscall` names the call and `code` the errno
 * (`ENOMEM`); the stack's first line carries all three.
 *
 * @example
 * ```ts
 * import { SyscallError } from "./syscall_error.ts";
 * import assert from "node:assert/strict";
 * const err = new SyscallError("fallocate", 12);
 * assert.equal(err.code, "ENOMEM");
 * assert.equal(err.syscall, "fallocate");
 * assert.equal(err.message, "Cannot allocate memory");
 * // ENOMEM fallocate Cannot allocate memory
 * ```
 */
export class SyscallError extends Error {
  /** The libc function that failed (`mmap`, `ioctl(KVM_RUN)`, ...). */
  readonly syscall: string;
  /** The errno value. */
  readonly errno: number;
  /** The errno's symbolic name (`ENOMEM`). */
  readonly code: string;

  /** Creates the error for `syscall` failing with `errno`. */
  constructor(syscall: string, errno: number) {
    super(strerror(errno));
    this.name = "SyscallError";
    this.syscall = syscall;
    this.errno = errno;
    this.code = errnoName(errno);
    const header = `${this.name}: ${this.message}`;
    const detailed = `${this.name}: ${syscall} failed with ${this.code}: ${this.message}`;
    if (this.stack?.startsWith(header)) this.stack = detailed + this.stack.slice(header.length);
  }
}

/** Builds a {@linkcode SyscallError} from the current errno; call right after the failure. */
export function lastError(syscall: string): SyscallError {
  return new SyscallError(syscall, lastErrno());
}

/** Throws the current errno as a {@linkcode SyscallError} when `result` is -1. */
export function check(syscall: string, result: number): number {
  if (result === -1) throw lastError(syscall);
  return result;
}

/** The bigint form of {@linkcode check} for `off_t`/`long` results. */
export function checkBig(syscall: string, result: bigint): bigint {
  if (result === -1n) throw lastError(syscall);
  return result;
}

/**
 * Runs `call` again for as long as it fails with `EINTR` (a signal arrived
 * while it was blocked, and the kernel does not restart it by itself), and
 * then returns its result like {@linkcode check}: any other failure throws a
 * {@linkcode SyscallError}. Only for calls that are safe to repeat, such as
 * `fallocate`, which keeps what it allocated before the signal.
 */
export function checkRestarting(syscall: string, call: () => number): number {
  for (;;) {
    const result = call();
    if (result !== -1) return result;
    const errno = lastErrno();
    if (errno !== Errno.EINTR) throw new SyscallError(syscall, errno);
  }
}
