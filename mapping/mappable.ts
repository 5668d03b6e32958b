/**
 * Something that can back guest memory: an open file descriptor that can be
 * `mmap`ed with `MAP_SHARED` (a memfd, a hugetlb memfd, a device file).
 * {@linkcode OwnedFd} satisfies it.
 *
 * @example
 * ```ts
 * import { type Mappable, SharedMemoryBacking } from "../mod.ts";
 * import assert from "node:assert/strict";
 *
 * using framebuffer = SharedMemoryBacking.create(0x10000n, { name: "framebuffer" });
 * const backing: Mappable = framebuffer;
 * assert.ok(backing.fd >= 0);
 * ```
 */
export interface Mappable {
  /** The file descriptor to map; must stay open while any mapping uses it. */
  readonly fd: number;
}
