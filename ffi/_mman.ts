/**
 * Typed wrappers of the `sys/mman.h` calls. Addresses and lengths are
 * `bigint` host virtual addresses; every failure throws a
 * {@linkcode SyscallError}.
 *
 * @module
 */

import { Mman } from "./_constants.ts";
import { libc } from "./_libc.ts";
import { check, checkRestarting, lastError } from "./syscall_error.ts";

/** `mmap(addr, length, prot, flags, fd, offset)`; returns the mapped address. */
export function mmap(
  addr: bigint,
  length: bigint,
  prot: number,
  flags: number,
  fd: number,
  offset: bigint,
): bigint {
  const result = libc().mmap(addr, length, prot, flags, fd, offset);
  if (result === Mman.MAP_FAILED) throw lastError("mmap");
  return result;
}

/** `munmap(addr, length)`. */
export function munmap(addr: bigint, length: bigint): void {
  check("munmap", libc().munmap(addr, length));
}

/** `mprotect(addr, length, prot)`. */
export function mprotect(addr: bigint, length: bigint, prot: number): void {
  check("mprotect", libc().mprotect(addr, length, prot));
}

/**
 * `madvise(addr, length, advice)`, repeated when a signal interrupts it
 * (`EINTR`: `MADV_POPULATE_READ`/`WRITE` stop when a signal is pending; the
 * pages populated so far stay, and populating again is harmless).
 */
export function madvise(addr: bigint, length: bigint, advice: number): void {
  checkRestarting("madvise", () => libc().madvise(addr, length, advice));
}

/**
 * `madvise(addr, length, advice)` split into `pieces` parts of whole 2 MiB
 * units run at once on Deno's blocking thread pool (for `MADV_POPULATE_*`:
 * populating memory on several cores). A part that fails is run again on
 * this thread, whose errno then tells why (a SyscallError named `madvise`).
 */
export async function madviseParallel(
  addr: bigint,
  length: bigint,
  advice: number,
  pieces: number,
): Promise<void> {
  const unit = 2n << 20n;
  const count = BigInt(Math.max(1, Math.floor(pieces)));
  let step = (length / count + unit - 1n) / unit * unit;
  if (step === 0n) step = length;
  const parts: [bigint, bigint][] = [];
  for (let at = 0n; at < length; at += step) {
    parts.push([addr + at, length - at < step ? length - at : step]);
  }
  const results = await Promise.all(
    parts.map(([start, len]) => libc().madvise_nonblocking(start, len, advice)),
  );
  results.forEach((result, i) => {
    if (result === -1) madvise(parts[i][0], parts[i][1], advice);
  });
}

/**
 * `mlock(addr, length)`, repeated on `EINTR` (locking faults the pages in,
 * which a pending signal can cut short; locking again is harmless).
 */
export function mlock(addr: bigint, length: bigint): void {
  checkRestarting("mlock", () => libc().mlock(addr, length));
}

/** `munlock(addr, length)`. */
export function munlock(addr: bigint, length: bigint): void {
  check("munlock", libc().munlock(addr, length));
}

/** Protection bits for a readable mapping, writable and/or executable as asked. */
export function protFor(writable: boolean, executable = false): number {
  return Mman.PROT_READ | (writable ? Mman.PROT_WRITE : 0) | (executable ? Mman.PROT_EXEC : 0);
}
