/**
 * Reading and writing the kernel's small text files (`/proc/self/maps`,
 * `/proc/sys/vm/nr_hugepages`) and listing `/proc/self/fd`, through libc.
 *
 * Deno's file APIs demand `--allow-all` for anything under `/proc` and
 * `/dev`; going through libc needs only `--allow-ffi`, which the library
 * requires anyway.
 *
 * @module
 */

import { Fcntl } from "./_constants.ts";
import { cString, lastErrno, libc } from "./_libc.ts";
import { check, lastError, SyscallError } from "./syscall_error.ts";
import { Errno } from "./_errno.ts";

/** `struct dirent` on x86_64 glibc (`bits/dirent.h`): the offset of `d_name`. */
const DIRENT_D_NAME_OFFSET = 19;

/** Reads the whole of `path` as UTF-8 text (`open` + `read` until end of file + `close`). */
export function readTextFile(path: string): string {
  const fd = check("open", libc().open(cString(path), Fcntl.O_RDONLY | Fcntl.O_CLOEXEC, 0));
  try {
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const chunk = new Uint8Array(65536);
      const n = libc().read(fd, chunk, BigInt(chunk.length));
      if (n === -1n) {
        if (lastErrno() === Errno.EINTR) continue;
        throw lastError("read");
      }
      if (n === 0n) break;
      chunks.push(chunk.subarray(0, Number(n)));
      total += Number(n);
    }
    const all = new Uint8Array(total);
    let at = 0;
    for (const chunk of chunks) {
      all.set(chunk, at);
      at += chunk.length;
    }
    return new TextDecoder().decode(all);
  } finally {
    libc().close(fd);
  }
}

/** Writes `text` to the existing file `path` in one `write` (as sysctl files expect). */
export function writeTextFile(path: string, text: string): void {
  const fd = check("open", libc().open(cString(path), Fcntl.O_WRONLY | Fcntl.O_CLOEXEC, 0));
  try {
    const bytes = new TextEncoder().encode(text);
    const n = libc().write(fd, bytes, BigInt(bytes.length));
    if (n === -1n) throw lastError("write");
    if (n !== BigInt(bytes.length)) throw new SyscallError("write", Errno.EIO);
  } finally {
    libc().close(fd);
  }
}

/** The names in directory `path`, without `.` and `..` (`opendir`/`readdir`). */
export function listDirectory(path: string): string[] {
  const dir = libc().opendir(cString(path));
  if (dir === null) throw lastError("opendir");
  try {
    const names: string[] = [];
    for (;;) {
      const entry = libc().readdir(dir);
      if (entry === null) break;
      const name = Deno.UnsafePointerView.getCString(entry, DIRENT_D_NAME_OFFSET);
      if (name !== "." && name !== "..") names.push(name);
    }
    return names;
  } finally {
    libc().closedir(dir);
  }
}
