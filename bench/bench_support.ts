/**
 * Helpers shared by the benchmark files (not part of the library).
 *
 * @module
 */

import { OwnedFd } from "../mod.ts";

/** `O_RDWR` from <fcntl.h>. */
const O_RDWR = 2;

/** Whether /dev/kvm can be opened read-write (KVM benchmarks are skipped otherwise). */
export function kvmAvailable(): boolean {
  try {
    OwnedFd.open("/dev/kvm", O_RDWR).close();
    return true;
  } catch {
    return false;
  }
}

/** A KVM benchmark's `ignore` value: skipped without KVM, with a note on stderr. */
export function skipWithoutKvm(what: string): boolean {
  if (kvmAvailable()) return false;
  console.error(`skipping ${what}: /dev/kvm is not available`);
  return true;
}

/** 1 MiB. */
export const MIB = 1n << 20n;

/** 1 GiB. */
export const GIB = 1n << 30n;

/** Region map parameters of ordinary RAM. */
export const RAM_PARAMS = { writable: true, executable: true, prefetch: false } as const;
