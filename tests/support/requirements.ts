/**
 * Host requirements of tests. A test that needs KVM, hugepages or SeaBIOS
 * is skipped where the host lacks them, unless MEMBACKING_REQUIRE_KVM=1,
 * MEMBACKING_REQUIRE_HUGETLB=1 or MEMBACKING_REQUIRE_SEABIOS=1 is set (as
 * `.ci/run` does): then it runs and fails, so CI can never pass by skipping.
 *
 * Use as `Deno.test({ name, ignore: skipWithoutKvm(), fn })`.
 */

import { Fcntl } from "../../ffi/_constants.ts";
import { OwnedFd } from "../../ffi/_owned_fd.ts";
import { listDirectory, readTextFile, writeTextFile } from "../../ffi/_proc_files.ts";

// Deno's own file APIs need --allow-all for anything under /proc and /dev,
// so these helpers go through libc (--allow-ffi) instead.

const NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages";

function canOpenReadWrite(path: string): boolean {
  try {
    OwnedFd.open(path, Fcntl.O_RDWR).close();
    return true;
  } catch {
    return false;
  }
}

function required(name: string): boolean {
  return Deno.env.get(name) === "1";
}

/** Whether /dev/kvm can be opened for reading and writing. */
export function hasKvm(): boolean {
  return canOpenReadWrite("/dev/kvm");
}

/** Whether the hugetlb pool can be resized (root with /proc/sys/vm/nr_hugepages). */
export function canUseHugetlb(): boolean {
  return canOpenReadWrite(NR_HUGEPAGES);
}

/** `ignore` value for a KVM test: true only when KVM is missing and not required. */
export function skipWithoutKvm(): boolean {
  return !required("MEMBACKING_REQUIRE_KVM") && !hasKvm();
}

/** `ignore` value for a hugetlb test: true only when hugepages are unusable and not required. */
export function skipWithoutHugetlb(): boolean {
  return !required("MEMBACKING_REQUIRE_HUGETLB") && !canUseHugetlb();
}

/** Where Debian's `seabios` package installs its images. */
export const SEABIOS_DIR = "/usr/share/seabios";

/** Whether `bios.bin` and `bios-256k.bin` are installed. */
export function hasSeabios(): boolean {
  try {
    return Deno.statSync(`${SEABIOS_DIR}/bios.bin`).isFile &&
      Deno.statSync(`${SEABIOS_DIR}/bios-256k.bin`).isFile;
  } catch {
    return false;
  }
}

/** `ignore` value for a SeaBIOS test: true only when SeaBIOS (or KVM) is missing and not required. */
export function skipWithoutSeabios(): boolean {
  if (skipWithoutKvm()) return true;
  return !required("MEMBACKING_REQUIRE_SEABIOS") && !hasSeabios();
}

/** Reads the hugetlb pool size (2 MiB pages). */
export function hugetlbPool(): number {
  return Number(readTextFile(NR_HUGEPAGES).trim());
}

/**
 * Sets the hugetlb pool to `pages` for the duration of `fn`, restoring the
 * previous size after. Returns what the kernel actually granted.
 */
export async function withHugetlbPool<T>(
  pages: number,
  fn: (granted: number) => T | Promise<T>,
): Promise<T> {
  const previous = hugetlbPool();
  writeTextFile(NR_HUGEPAGES, `${pages}\n`);
  try {
    return await fn(hugetlbPool());
  } finally {
    writeTextFile(NR_HUGEPAGES, `${previous}\n`);
  }
}

/** Number of open file descriptors of this process. */
export function openFdCount(): number {
  return listDirectory("/proc/self/fd").length;
}

/** Number of lines in /proc/self/maps. */
export function mapsLineCount(): number {
  return readTextFile("/proc/self/maps").split("\n").filter((l) => l.length > 0).length;
}

/** Number of /proc/self/maps lines that contain `text` (e.g. `/memfd:bios`). */
export function mapsLinesContaining(text: string): number {
  return readTextFile("/proc/self/maps").split("\n").filter((l) => l.includes(text)).length;
}

/** Number of /proc/self/maps entries of at least `bytes` bytes (reservations, not heap pages). */
export function largeMappingCount(bytes: bigint): number {
  let n = 0;
  for (const line of readTextFile("/proc/self/maps").split("\n")) {
    const dash = line.indexOf("-");
    const space = line.indexOf(" ");
    if (dash < 0 || space < 0) continue;
    const start = BigInt(`0x${line.slice(0, dash)}`);
    const end = BigInt(`0x${line.slice(dash + 1, space)}`);
    if (end - start >= bytes) n++;
  }
  return n;
}
