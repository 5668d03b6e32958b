/**
 * Views over raw host memory. The only place where a host address becomes a
 * JavaScript buffer; callers must make sure the range is mapped with the
 * access they use for as long as they use the view.
 *
 * @module
 */

import { libc } from "./_libc.ts";

/**
 * A `Uint8Array` over `[address, address + length)` of this process's
 * memory. Touching it where nothing is mapped kills the process, so callers
 * check their own mapping table first.
 */
export function hostBytes(address: bigint, length: bigint): Uint8Array<ArrayBuffer> {
  if (length === 0n) return new Uint8Array(0);
  const pointer = Deno.UnsafePointer.create(address);
  if (pointer === null) throw new RangeError("cannot view host address 0");
  const buffer = Deno.UnsafePointerView.getArrayBuffer(pointer, Number(length));
  return new Uint8Array(buffer);
}

/** `memcpy(dest, src, n)` between two host addresses. */
export function hostCopy(dest: bigint, src: bigint, length: bigint): void {
  if (length === 0n) return;
  libc().memcpy(dest, src, length);
}
