/**
 * Host requirements of tests. A test that needs KVM or hugepages is skipped
 * where the host lacks them, unless MEMBACKING_REQUIRE_KVM=1 or
 * MEMBACKING_REQUIRE_HUGETLB=1 is set (as `.ci/run` does): then it runs and
 * fails, so CI can never pass by skipping.
 *
 * Use as `Deno.test({ name, ignore: skipWithoutKvm(), fn })`.
 */

function required(name: string): boolean {
  return Deno.env.get(name) === "1";
}

/** Whether /dev/kvm can be opened for reading and writing. */
export function hasKvm(): boolean {
  try {
    const file = Deno.openSync("/dev/kvm", { read: true, write: true });
    file.close();
    return true;
  } catch {
    return false;
  }
}

/** Whether the hugetlb pool can be resized (root with /proc/sys/vm/nr_hugepages). */
export function canUseHugetlb(): boolean {
  try {
    const file = Deno.openSync("/proc/sys/vm/nr_hugepages", { read: true, write: true });
    file.close();
    return true;
  } catch {
    return false;
  }
}

/** `ignore` value for a KVM test: true only when KVM is missing and not required. */
export function skipWithoutKvm(): boolean {
  return !required("MEMBACKING_REQUIRE_KVM") && !hasKvm();
}

/** `ignore` value for a hugetlb test: true only when hugepages are unusable and not required. */
export function skipWithoutHugetlb(): boolean {
  return !required("MEMBACKING_REQUIRE_HUGETLB") && !canUseHugetlb();
}

/** Reads the hugetlb pool size (2 MiB pages). */
export function hugetlbPool(): number {
  return Number(Deno.readTextFileSync("/proc/sys/vm/nr_hugepages").trim());
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
  Deno.writeTextFileSync("/proc/sys/vm/nr_hugepages", `${pages}\n`);
  try {
    return await fn(hugetlbPool());
  } finally {
    Deno.writeTextFileSync("/proc/sys/vm/nr_hugepages", `${previous}\n`);
  }
}

/** Number of open file descriptors of this process. */
export function openFdCount(): number {
  let n = 0;
  for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
  return n;
}

/** Number of lines in /proc/self/maps. */
export function mapsLineCount(): number {
  return Deno.readTextFileSync("/proc/self/maps").split("\n").filter((l) => l.length > 0).length;
}
