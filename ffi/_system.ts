/**
 * Process-wide facts and knobs: the page size and VMA names.
 *
 * @module
 */

import { Prctl, Sysconf } from "./_constants.ts";
import { cString, libc } from "./_libc.ts";
import { check, checkBig } from "./syscall_error.ts";

let cachedPageSize: bigint | undefined;

/** The host page size, `sysconf(_SC_PAGESIZE)`. */
export function hostPageSize(): bigint {
  cachedPageSize ??= checkBig("sysconf", libc().sysconf(Sysconf._SC_PAGESIZE));
  return cachedPageSize;
}

/**
 * Names an anonymous range (`prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME)`), shown
 * as `[anon:name]` in /proc/self/maps. Throws a SyscallError (EINVAL on
 * kernels built without CONFIG_ANON_VMA_NAME).
 */
export function setAnonVmaName(address: bigint, length: bigint, name: string): void {
  check("prctl(PR_SET_VMA_ANON_NAME)", prctlAnonVmaName(address, length, name));
}

/**
 * {@linkcode setAnonVmaName} for names that are only cosmetic: returns
 * whether the kernel took the name and builds no error when it did not. On
 * a kernel that refuses every name, an error per private RAM range cost
 * more than the rest of the build together.
 */
export function tryAnonVmaName(address: bigint, length: bigint, name: string): boolean {
  return prctlAnonVmaName(address, length, name) !== -1;
}

function prctlAnonVmaName(address: bigint, length: bigint, name: string): number {
  return libc().prctl_str(
    Prctl.PR_SET_VMA,
    BigInt(Prctl.PR_SET_VMA_ANON_NAME),
    address,
    length,
    cString(name),
  );
}

/** Whether this is a Linux host (the library's only supported OS). */
export function isLinux(): boolean {
  return Deno.build.os === "linux";
}

/** `SYS_membarrier` on x86_64 (`arch/x86/entry/syscalls/syscall_64.tbl`). */
const SYS_MEMBARRIER = 324n;
/** `include/uapi/linux/membarrier.h`. */
const MEMBARRIER_CMD_PRIVATE_EXPEDITED = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED = 1 << 4;

let membarrierRegistered: boolean | undefined;

/**
 * Registers the process for `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`
 * (once); whether the kernel has it.
 */
export function registerMembarrier(): boolean {
  membarrierRegistered ??= libc().syscall_membarrier(
    SYS_MEMBARRIER,
    MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
    0,
    0,
  ) === 0n;
  return membarrierRegistered;
}

/**
 * `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`: every thread of the
 * process that is running executes a full memory barrier before this
 * returns. Throws a SyscallError (call {@linkcode registerMembarrier} first).
 */
export function membarrier(): void {
  checkBig(
    "membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)",
    libc().syscall_membarrier(SYS_MEMBARRIER, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0),
  );
}
