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

const PAGE = 4096n;

/** A page of zeros to compare with (its own `ArrayBuffer`, never moved), and its address. */
const ZERO_PAGE = new ArrayBuffer(4096);
let zeroAddress: bigint | undefined;

/**
 * Whether the `length` bytes at host address `address` are all zero:
 * `memcmp` against a page of zeros, a page at a time (for a 1 GiB slot's
 * 32 KiB dirty bitmap about 0.3 µs, against 2 µs for a typed-array scan).
 */
export function hostIsZero(address: bigint, length: number): boolean {
  zeroAddress ??= Deno.UnsafePointer.value(Deno.UnsafePointer.of(ZERO_PAGE));
  const memcmp = libc().memcmp;
  const end = address + BigInt(length);
  for (let at = address; at < end; at += PAGE) {
    const n = end - at < PAGE ? end - at : PAGE;
    if (memcmp(at, zeroAddress, n) !== 0) return false;
  }
  return true;
}

/**
 * Copies runs of 4 KiB pages between two host ranges: for each of the first
 * `count` (first page, pages) pairs of `runs`, `pages` pages from
 * `src + 4096 first` to `dest + 4096 first` (`dest` and `src` are where
 * page 0 would be; only the runs are touched). One `memcpy` per run.
 *
 * The arguments are bigints because a number passed for a 64-bit parameter
 * takes Deno's slow call path (about 90 ns more per call, measured), and
 * page numbers below 2^30 are made bigints from small integers, the cheap
 * way (`bench/snapshot_bench.ts`, `restore_dirty_1000`).
 */
export function hostCopyPageRuns(
  dest: bigint,
  src: bigint,
  runs: Float64Array,
  count: number,
): void {
  const memcpy = libc().memcpy;
  for (let k = 0; k < count; k++) {
    const first = runs[2 * k];
    const pages = runs[2 * k + 1];
    const at = (first < 0x40000000 ? BigInt(first | 0) : BigInt(first)) * PAGE;
    memcpy(dest + at, src + at, pages === 1 ? PAGE : BigInt(pages) * PAGE);
  }
}
