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

/**
 * The host address of the first byte of `bytes`, for a kernel struct that
 * holds a pointer (`kvm_dirty_log.dirty_bitmap`). The array must be backed
 * by its own `ArrayBuffer` (`new Uint8Array(new ArrayBuffer(n))`, never on
 * V8's heap) and stay alive while the kernel may use the address.
 */
export function bufferAddress(bytes: Uint8Array<ArrayBuffer>): bigint {
  return Deno.UnsafePointer.value(Deno.UnsafePointer.of(bytes));
}

/**
 * `memcpy(dest, src, n)` with the addresses as numbers (exact: host
 * addresses are below 2^47), for loops of many small copies.
 */
export function hostCopyNumbers(dest: number, src: number, length: number): void {
  libc().memcpy(BigInt(dest), BigInt(src), BigInt(length));
}
