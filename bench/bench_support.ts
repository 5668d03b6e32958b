/**
 * Helpers shared by the benchmark files (not part of the library).
 *
 * @module
 */

import { Fcntl, Mman } from "../ffi/_constants.ts";
import { mmap, protFor } from "../ffi/_mman.ts";
import { OwnedFd } from "../mod.ts";

/** Whether /dev/kvm can be opened read-write (KVM benchmarks are skipped otherwise). */
export function kvmAvailable(): boolean {
  try {
    OwnedFd.open("/dev/kvm", Fcntl.O_RDWR).close();
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

/**
 * The `_ffi` benchmarks make the library's syscalls straight through the
 * FFI layer, with none of the library's bookkeeping: compared with the full
 * stack in the same process (same runtime, same VM), they isolate what the
 * library itself costs from the kernel work and from the host's noise.
 */
export const raw = {
  /** `mmap(MAP_SHARED | MAP_FIXED)` of `fd` at `host`, as `VaMapper.mapShared` does. */
  mapShared(host: bigint, len: bigint, fd: number, offset: bigint, writable: boolean): void {
    mmap(host, len, protFor(writable), Mman.MAP_SHARED | Mman.MAP_FIXED, fd, offset);
  },
  /** The `PROT_NONE` mapping `VaMapper.unmap` puts back. */
  unmap(host: bigint, len: bigint): void {
    const flags = Mman.MAP_PRIVATE | Mman.MAP_ANONYMOUS | Mman.MAP_FIXED | Mman.MAP_NORESERVE;
    mmap(host, len, Mman.PROT_NONE, flags, -1, 0n);
  },
};
