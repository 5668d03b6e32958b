/**
 * Something that can back guest memory: an open file descriptor that can be
 * `mmap`ed with `MAP_SHARED` (a memfd, a hugetlb memfd, a device file).
 * {@linkcode OwnedFd} satisfies it.
 *
 * @example
 * ```ts ignore
 * import type { Mappable } from "./mappable.ts";
 * import { OwnedFd } from "../ffi/_owned_fd.ts";
 * const backing: Mappable = OwnedFd.memfd("framebuffer", 0);
 * ```
 */
export interface Mappable {
  /** The file descriptor to map; must stay open while any mapping uses it. */
  readonly fd: number;
}
