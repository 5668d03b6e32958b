/**
 * Kernel and libc constants for x86_64 Linux, grouped by the header that
 * defines them.
 *
 * @module
 */

/** Memory protection and mapping flags (`include/uapi/asm-generic/mman-common.h`, `mman.h`). */
export const Mman = {
  PROT_NONE: 0x0,
  PROT_READ: 0x1,
  PROT_WRITE: 0x2,
  PROT_EXEC: 0x4,
  MAP_SHARED: 0x01,
  MAP_PRIVATE: 0x02,
  MAP_FIXED: 0x10,
  MAP_ANONYMOUS: 0x20,
  MAP_NORESERVE: 0x4000,
  MAP_POPULATE: 0x8000,
  MAP_FIXED_NOREPLACE: 0x100000,
  /** `(void *)-1` as an unsigned address. */
  MAP_FAILED: 0xffff_ffff_ffff_ffffn,
} as const;

/** `madvise` advice values (`include/uapi/asm-generic/mman-common.h`). */
export const Madv = {
  MADV_NORMAL: 0,
  MADV_DONTNEED: 4,
  MADV_REMOVE: 9,
  MADV_HUGEPAGE: 14,
  MADV_NOHUGEPAGE: 15,
  MADV_POPULATE_READ: 22,
  MADV_POPULATE_WRITE: 23,
} as const;

/** `memfd_create` flags (`include/uapi/linux/memfd.h`). */
export const Memfd = {
  MFD_CLOEXEC: 0x0001,
  MFD_ALLOW_SEALING: 0x0002,
  MFD_HUGETLB: 0x0004,
  /** The hugepage size is encoded as log2(size) << MFD_HUGE_SHIFT. */
  MFD_HUGE_SHIFT: 26,
} as const;

/** `open`/`fcntl` values (`include/uapi/asm-generic/fcntl.h`, `include/uapi/linux/fcntl.h`). */
export const Fcntl = {
  O_RDONLY: 0o0,
  O_WRONLY: 0o1,
  O_RDWR: 0o2,
  O_ACCMODE: 0o3,
  O_CLOEXEC: 0o2000000,
  F_GETFD: 1,
  F_GETFL: 3,
  /** `F_LINUX_SPECIFIC_BASE + 6` (`include/uapi/linux/fcntl.h`). */
  F_DUPFD_CLOEXEC: 1030,
  F_ADD_SEALS: 1033,
  F_GET_SEALS: 1034,
  F_SEAL_SEAL: 0x0001,
  F_SEAL_SHRINK: 0x0002,
  F_SEAL_GROW: 0x0004,
  F_SEAL_WRITE: 0x0008,
} as const;

/** `lseek` whence values (`include/uapi/linux/fs.h`). */
export const Seek = {
  SEEK_SET: 0,
  SEEK_CUR: 1,
  SEEK_END: 2,
} as const;

/** `prctl` options (`include/uapi/linux/prctl.h`). */
export const Prctl = {
  PR_SET_VMA: 0x53564d41,
  PR_SET_VMA_ANON_NAME: 0,
} as const;

/** `sysconf` names (glibc `bits/confname.h`). */
export const Sysconf = {
  _SC_PAGESIZE: 30,
} as const;
