/**
 * `struct kvm_cpuid2` and its entries, as passed to `KVM_GET_SUPPORTED_CPUID`
 * and `KVM_SET_CPUID2` (`arch/x86/include/uapi/asm/kvm.h`).
 *
 * @module
 */

import { CpuidEntry2Layout, KvmStructSize } from "./kvm_constants.ts";

/**
 * `struct kvm_cpuid_entry2`: what CPUID returns for one leaf (`function`)
 * and subleaf (`index`).
 *
 * @example
 * ```ts
 * import type { KvmCpuidEntry2 } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const leaf0: KvmCpuidEntry2 = {
 *   function: 0, index: 0, flags: 0, eax: 0xd, ebx: 0x756e6547, ecx: 0x6c65746e, edx: 0x49656e69,
 * };
 * const vendor = new TextDecoder().decode(new Uint32Array([leaf0.ebx, leaf0.edx, leaf0.ecx]));
 * assert.equal(vendor, "GenuineIntel");
 * ```
 */
export interface KvmCpuidEntry2 {
  /** `__u32 function`: the leaf (EAX on entry to CPUID). */
  readonly function: number;
  /** `__u32 index`: the subleaf (ECX on entry), where `flags` says it matters. */
  readonly index: number;
  /** `__u32 flags`: `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` (1) and friends. */
  readonly flags: number;
  /** `__u32 eax`. */
  readonly eax: number;
  /** `__u32 ebx`. */
  readonly ebx: number;
  /** `__u32 ecx`. */
  readonly ecx: number;
  /** `__u32 edx`. */
  readonly edx: number;
}

const FIELDS = ["function", "index", "flags", "eax", "ebx", "ecx", "edx"] as const;

/** Lays out `struct kvm_cpuid2` with room for `capacity` entries, holding `entries`. */
export function encodeCpuid2(
  entries: readonly KvmCpuidEntry2[],
  capacity = entries.length,
): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(KvmStructSize.cpuid2 + capacity * KvmStructSize.cpuidEntry2);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, Math.max(capacity, entries.length), true);
  entries.forEach((entry, i) => {
    const at = KvmStructSize.cpuid2 + i * KvmStructSize.cpuidEntry2;
    for (const field of FIELDS) view.setUint32(at + CpuidEntry2Layout[field], entry[field], true);
  });
  return bytes;
}

/** Reads the `nent` entries of a `struct kvm_cpuid2`. */
export function decodeCpuid2(bytes: Uint8Array<ArrayBuffer>): KvmCpuidEntry2[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = view.getUint32(0, true);
  const entries: KvmCpuidEntry2[] = [];
  for (let i = 0; i < count; i++) {
    const at = KvmStructSize.cpuid2 + i * KvmStructSize.cpuidEntry2;
    const read = (field: typeof FIELDS[number]) =>
      view.getUint32(at + CpuidEntry2Layout[field], true);
    entries.push({
      function: read("function"),
      index: read("index"),
      flags: read("flags"),
      eax: read("eax"),
      ebx: read("ebx"),
      ecx: read("ecx"),
      edx: read("edx"),
    });
  }
  return entries;
}
