/**
 * Reads the protections of a VA reservation from /proc/self/maps (through
 * libc: Deno's file APIs want --allow-all for /proc).
 */
import { readTextFile } from "../../ffi/_proc_files.ts";

/** One line of /proc/self/maps inside a reservation, in offsets from its base. */
export interface VaProtection {
  start: bigint;
  end: bigint;
  /** e.g. `rw-s`, `r--s`, `---p`. */
  perms: string;
}

/**
 * The lines of /proc/self/maps covering `[base, base + size)`, clipped to it,
 * with offsets relative to `base`, adjacent lines with equal perms merged.
 */
export function vaProtections(base: bigint, size: bigint): VaProtection[] {
  const text = readTextFile("/proc/self/maps");
  const end = base + size;
  const out: VaProtection[] = [];
  let pos = 0;
  while (pos < text.length) {
    let nl = text.indexOf("\n", pos);
    if (nl < 0) nl = text.length;
    const dash = text.indexOf("-", pos);
    const space = text.indexOf(" ", dash);
    const lo = BigInt("0x" + text.slice(pos, dash));
    const hi = BigInt("0x" + text.slice(dash + 1, space));
    if (hi > base && lo < end) {
      const perms = text.slice(space + 1, space + 5);
      const s = (lo < base ? base : lo) - base;
      const e = (hi > end ? end : hi) - base;
      const last = out[out.length - 1];
      if (last !== undefined && last.end === s && last.perms === perms) last.end = e;
      else out.push({ start: s, end: e, perms });
    } else if (lo >= end) {
      break;
    }
    pos = nl + 1;
  }
  return out;
}

/** The perms at offset `offset` of the reservation. */
export function protectionAt(list: readonly VaProtection[], offset: bigint): string | undefined {
  return list.find((p) => p.start <= offset && offset < p.end)?.perms;
}
