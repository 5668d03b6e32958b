/**
 * Allocation of the shared memory object that backs guest RAM: a plain
 * memfd, or a hugetlb memfd whose pages are all reserved up front.
 *
 * Both are sealed once sized (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`):
 * whoever holds a descriptor of guest RAM can then neither truncate it under
 * the guest (which would turn guest accesses into SIGBUS) nor add other seals.
 *
 * @module
 */

import { MissingPermissionError } from "../ffi/missing_permission_error.ts";
import { Fcntl, Memfd, Mman } from "../ffi/_constants.ts";
import { HostMapping } from "../ffi/_host_mapping.ts";
import { hugetlbMemfdFlags, OwnedFd } from "../ffi/_owned_fd.ts";
import { MemorySize } from "../layout/memory_size.ts";
import { MemoryBuildError } from "./memory_build_error.ts";

/** The memfd name of guest RAM (shown as `/memfd:guest-ram` in /proc/self/maps). */
export const GUEST_RAM_NAME = "guest-ram";

/** The seals put on guest RAM once it has its size. */
export const GUEST_RAM_SEALS: number = Fcntl.F_SEAL_SHRINK | Fcntl.F_SEAL_GROW | Fcntl.F_SEAL_SEAL;

/** Runs `steps` on a new memfd named `name`; closes it and rethrows if any step throws. */
export function newMemfd(name: string, flags: number, steps: (fd: OwnedFd) => void): OwnedFd {
  const fd = OwnedFd.memfd(name, flags);
  try {
    steps(fd);
    return fd;
  } catch (error) {
    fd.close();
    throw error;
  }
}

/**
 * A sealed memfd of `size` bytes (`guest-ram`). Pages are allocated on first
 * touch. Failure: `allocationFailed` with the OS error as cause.
 */
export function allocateSharedRam(size: bigint): OwnedFd {
  try {
    return newMemfd(GUEST_RAM_NAME, Memfd.MFD_CLOEXEC | Memfd.MFD_ALLOW_SEALING, (fd) => {
      fd.truncate(size);
      fd.addSeals(GUEST_RAM_SEALS);
    });
  } catch (cause) {
    if (cause instanceof MissingPermissionError) throw cause;
    throw new MemoryBuildError({ kind: "allocationFailed" }, { cause });
  }
}

/**
 * A sealed hugetlb memfd of `size` bytes in pages of `hugepageSize`, every
 * page taken from the pool now.
 *
 * Two steps make that so. Mapping the whole file shared (and unmapping it
 * again) reserves all its pages against the pool: that is where a short pool
 * fails, with ENOMEM, and the reservation stays with the file. `fallocate`
 * then allocates the reserved pages. Only `ftruncate` would leave the pages
 * to be found at fault time, when a short pool kills the guest with SIGBUS.
 *
 * Failure: `hugepageAllocationFailed` with the OS error as cause.
 */
export function allocateHugetlbRam(size: bigint, hugepageSize: bigint): OwnedFd {
  const flags = hugetlbMemfdFlags(hugepageSize, Memfd.MFD_CLOEXEC | Memfd.MFD_ALLOW_SEALING);
  try {
    return newMemfd(GUEST_RAM_NAME, flags, (fd) => {
      fd.truncate(size);
      // (`using`: a failed unmap is tried again on the way out, so no
      // mapping of the file outlives a failed build.)
      using reservation = HostMapping.shared(fd.fd, 0n, size, Mman.PROT_NONE);
      reservation.unmap();
      fd.allocate(0, 0n, size);
      fd.addSeals(GUEST_RAM_SEALS);
    });
  } catch (cause) {
    if (cause instanceof MissingPermissionError) throw cause;
    throw new MemoryBuildError({
      kind: "hugepageAllocationFailed",
      size: new MemorySize(size),
      hugepageSize: new MemorySize(hugepageSize),
      pageCount: size / hugepageSize,
    }, { cause });
  }
}
