/**
 * The libc symbol table and the one `Deno.dlopen` of libc.
 *
 * Every foreign call of the library goes through {@linkcode libc}. The table
 * is declared `as const satisfies Deno.ForeignLibraryInterface`, so
 * `deno check` types every call site; each parameter carries its C
 * declaration as a comment. Addresses and lengths are `usize`/`u64` and come
 * back as `bigint`.
 *
 * @module
 */

import { MissingPermissionError } from "./missing_permission_error.ts";

/** The libc functions membacking binds, with their C prototypes. */
export const LIBC_SYMBOLS = {
  /** `void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);` */
  mmap: {
    parameters: [
      "usize", // void *addr
      "usize", // size_t length
      "i32", // int prot
      "i32", // int flags
      "i32", // int fd
      "i64", // off_t offset
    ],
    result: "usize", // void * (MAP_FAILED == (void *)-1)
  },
  /** `int munmap(void *addr, size_t length);` */
  munmap: {
    parameters: [
      "usize", // void *addr
      "usize", // size_t length
    ],
    result: "i32",
  },
  /** `int mprotect(void *addr, size_t len, int prot);` */
  mprotect: {
    parameters: [
      "usize", // void *addr
      "usize", // size_t len
      "i32", // int prot
    ],
    result: "i32",
  },
  /** `int madvise(void *addr, size_t length, int advice);` */
  madvise: {
    parameters: [
      "usize", // void *addr
      "usize", // size_t length
      "i32", // int advice
    ],
    result: "i32",
  },
  /**
   * `int madvise(void *addr, size_t length, int advice);` run on a thread of
   * Deno's blocking pool (`nonblocking`): several at once populate memory
   * in parallel. errno is that thread's, so a failure is reported by
   * calling the blocking form again.
   */
  madvise_nonblocking: {
    name: "madvise",
    parameters: [
      "usize", // void *addr
      "usize", // size_t length
      "i32", // int advice
    ],
    result: "i32",
    nonblocking: true,
  },
  /** `int mlock(const void *addr, size_t len);` */
  mlock: {
    parameters: [
      "usize", // const void *addr
      "usize", // size_t len
    ],
    result: "i32",
  },
  /** `int munlock(const void *addr, size_t len);` */
  munlock: {
    parameters: [
      "usize", // const void *addr
      "usize", // size_t len
    ],
    result: "i32",
  },
  /** `int memfd_create(const char *name, unsigned int flags);` */
  memfd_create: {
    parameters: [
      "buffer", // const char *name (NUL-terminated)
      "u32", // unsigned int flags
    ],
    result: "i32",
  },
  /** `int ftruncate(int fd, off_t length);` */
  ftruncate: {
    parameters: [
      "i32", // int fd
      "i64", // off_t length
    ],
    result: "i32",
  },
  /** `int fallocate(int fd, int mode, off_t offset, off_t len);` */
  fallocate: {
    parameters: [
      "i32", // int fd
      "i32", // int mode
      "i64", // off_t offset
      "i64", // off_t len
    ],
    result: "i32",
  },
  /** `int fstat(int fd, struct stat *statbuf);` (glibc 2.33+ exports it) */
  fstat: {
    parameters: [
      "i32", // int fd
      "buffer", // struct stat *statbuf (144 bytes on x86_64)
    ],
    result: "i32",
  },
  /** `off_t lseek(int fd, off_t offset, int whence);` */
  lseek: {
    parameters: [
      "i32", // int fd
      "i64", // off_t offset
      "i32", // int whence
    ],
    result: "i64",
  },
  /** `int fcntl(int fd, int cmd, ... /* int arg *\/);` (integer-argument form) */
  fcntl: {
    parameters: [
      "i32", // int fd
      "i32", // int cmd
      "i32", // int arg
    ],
    result: "i32",
  },
  /** `int ioctl(int fd, unsigned long request, ... /* void *argp *\/);` (pointer form) */
  ioctl: {
    parameters: [
      "i32", // int fd
      "u64", // unsigned long request
      "buffer", // void *argp
    ],
    result: "i32",
  },
  /** `int ioctl(int fd, unsigned long request, ... /* unsigned long arg *\/);` (integer form) */
  ioctl_int: {
    name: "ioctl",
    parameters: [
      "i32", // int fd
      "u64", // unsigned long request
      "u64", // unsigned long arg
    ],
    result: "i32",
  },
  /** `int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5);` */
  prctl: {
    parameters: [
      "i32", // int option
      "u64", // unsigned long arg2
      "u64", // unsigned long arg3
      "u64", // unsigned long arg4
      "u64", // unsigned long arg5
    ],
    result: "i32",
  },
  /** `int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, const char *arg5);` */
  prctl_str: {
    name: "prctl",
    parameters: [
      "i32", // int option
      "u64", // unsigned long arg2
      "u64", // unsigned long arg3
      "u64", // unsigned long arg4
      "buffer", // const char *arg5 (NUL-terminated)
    ],
    result: "i32",
  },
  /**
   * `long syscall(long number, ...);` for `membarrier(int cmd, unsigned int
   * flags, int cpu_id)`: glibc has no wrapper (integer arguments only, so
   * the variadic call passes them in the same registers).
   */
  syscall_membarrier: {
    name: "syscall",
    parameters: [
      "i64", // long number (SYS_membarrier)
      "i32", // int cmd
      "u32", // unsigned int flags
      "i32", // int cpu_id
    ],
    result: "i64",
  },
  /** `int open(const char *pathname, int flags, ... /* mode_t mode *\/);` */
  open: {
    parameters: [
      "buffer", // const char *pathname (NUL-terminated)
      "i32", // int flags
      "u32", // mode_t mode
    ],
    result: "i32",
  },
  /** `int close(int fd);` */
  close: {
    parameters: [
      "i32", // int fd
    ],
    result: "i32",
  },
  /** `ssize_t read(int fd, void *buf, size_t count);` */
  read: {
    parameters: [
      "i32", // int fd
      "buffer", // void *buf
      "usize", // size_t count
    ],
    result: "isize",
  },
  /** `ssize_t write(int fd, const void *buf, size_t count);` */
  write: {
    parameters: [
      "i32", // int fd
      "buffer", // const void *buf
      "usize", // size_t count
    ],
    result: "isize",
  },
  /** `ssize_t pread(int fd, void *buf, size_t count, off_t offset);` */
  pread: {
    parameters: [
      "i32", // int fd
      "buffer", // void *buf
      "usize", // size_t count
      "i64", // off_t offset
    ],
    result: "isize",
  },
  /** `ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset);` */
  pwrite: {
    parameters: [
      "i32", // int fd
      "buffer", // const void *buf
      "usize", // size_t count
      "i64", // off_t offset
    ],
    result: "isize",
  },
  /** `DIR *opendir(const char *name);` */
  opendir: {
    parameters: [
      "buffer", // const char *name (NUL-terminated)
    ],
    result: "pointer", // DIR * (NULL on failure)
  },
  /** `struct dirent *readdir(DIR *dirp);` */
  readdir: {
    parameters: [
      "pointer", // DIR *dirp
    ],
    result: "pointer", // struct dirent * (NULL at the end or on failure)
  },
  /** `int closedir(DIR *dirp);` */
  closedir: {
    parameters: [
      "pointer", // DIR *dirp
    ],
    result: "i32",
  },
  /** `int dup(int oldfd);` */
  dup: {
    parameters: [
      "i32", // int oldfd
    ],
    result: "i32",
  },
  /** `long sysconf(int name);` */
  sysconf: {
    parameters: [
      "i32", // int name
    ],
    result: "i64",
  },
  /** `int *__errno_location(void);` (glibc: address of the calling thread's errno) */
  __errno_location: {
    parameters: [],
    result: "pointer",
  },
  /** `char *strerror(int errnum);` */
  strerror: {
    parameters: [
      "i32", // int errnum
    ],
    result: "pointer",
  },
  /**
   * `ssize_t copy_file_range(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t len, unsigned int flags);`
   */
  copy_file_range: {
    parameters: [
      "i32", // int fd_in
      "buffer", // off_t *off_in (advanced by the kernel)
      "i32", // int fd_out
      "buffer", // off_t *off_out (advanced by the kernel)
      "usize", // size_t len
      "u32", // unsigned int flags (0)
    ],
    result: "isize",
  },
  /** `int memcmp(const void *s1, const void *s2, size_t n);` */
  memcmp: {
    parameters: [
      "usize", // const void *s1
      "usize", // const void *s2
      "usize", // size_t n
    ],
    result: "i32",
  },
  /** `void *memcpy(void *dest, const void *src, size_t n);` */
  memcpy: {
    parameters: [
      "usize", // void *dest
      "usize", // const void *src
      "usize", // size_t n
    ],
    result: "usize",
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The typed symbols of the loaded libc. */
export type LibcSymbols = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];

/** What {@linkcode libc} returns: the real symbols, or a wrapper of them while faults are armed. */
let loaded: LibcSymbols | undefined;
/** The real symbols, once opened. */
let real: LibcSymbols | undefined;
let errnoView: Deno.UnsafePointerView | undefined;

/**
 * Opens libc once (lazily, so that importing the types needs no permission).
 *
 * While the test seam of `_fault_injection.ts` is armed this returns its
 * wrapping table instead; the call sites see no difference and pay nothing
 * when it is not.
 */
export function libc(): LibcSymbols {
  if (loaded !== undefined) return loaded;
  loaded = realLibc();
  return loaded;
}

/** The real libc symbols, never a wrapper (for the fault-injection seam). */
export function realLibc(): LibcSymbols {
  if (real !== undefined) return real;
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    throw new MissingPermissionError("ffi", "to call libc (mmap, memfd_create, ioctl)");
  }
  real = Deno.dlopen("libc.so.6", LIBC_SYMBOLS).symbols;
  return real;
}

/**
 * Makes {@linkcode libc} return `symbols` (a wrapper of the real table),
 * or the real table again when `undefined`. Only for `_fault_injection.ts`.
 */
export function swapLibc(symbols: LibcSymbols | undefined): void {
  loaded = symbols ?? realLibc();
}

/** Reads the calling thread's `errno` (call right after the failing libc call). */
export function lastErrno(): number {
  if (errnoView === undefined) {
    const where = libc().__errno_location();
    if (where === null) return 0;
    errnoView = new Deno.UnsafePointerView(where);
  }
  return errnoView.getInt32();
}

/** `strerror(errno)`: the C library's text for an error number. */
export function strerror(errno: number): string {
  const text = libc().strerror(errno);
  return text === null ? `Unknown error ${errno}` : Deno.UnsafePointerView.getCString(text);
}

const encoder = new TextEncoder();

/** A NUL-terminated copy of `text` for a `const char *` parameter. */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(text);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}
