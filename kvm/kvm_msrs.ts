/**
 * `struct kvm_msrs` and its entries, as passed to `KVM_GET_MSRS` and
 * `KVM_SET_MSRS` (`arch/x86/include/uapi/asm/kvm.h`).
 *
 * @module
 */

import { KvmStructSize, MsrEntryLayout } from "./kvm_constants.ts";

/**
 * `struct kvm_msr_entry`: one model-specific register and its value.
 *
 * @example
 * ```ts
 * import { KvmSystem } from "../kvm.ts";
 * import type { KvmMsrEntry } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * using kvm = KvmSystem.open();
 * using vm = kvm.createVm();
 * using vcpu = vm.createVcpu(0);
 * const sysenterCs: KvmMsrEntry = { index: 0x174, data: 0x10n }; // IA32_SYSENTER_CS
 * assert.equal(vcpu.setMsrs([sysenterCs]), 1);
 * assert.deepEqual(vcpu.getMsrs([0x174]), [{ index: 0x174, data: 0x10n }]);
 * ```
 */
export interface KvmMsrEntry {
  /** `__u32 index`: the MSR number (ECX of `rdmsr`/`wrmsr`). */
  readonly index: number;
  /** `__u64 data`. */
  readonly data: bigint;
}

/** Lays out `struct kvm_msrs` holding `entries`. */
export function encodeMsrs(entries: readonly KvmMsrEntry[]): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(KvmStructSize.msrs + entries.length * KvmStructSize.msrEntry);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, entries.length, true);
  entries.forEach((entry, i) => {
    const at = KvmStructSize.msrs + i * KvmStructSize.msrEntry;
    view.setUint32(at + MsrEntryLayout.index, entry.index, true);
    view.setBigUint64(at + MsrEntryLayout.data, BigInt.asUintN(64, entry.data), true);
  });
  return bytes;
}

/** Reads the first `count` entries of a `struct kvm_msrs`. */
export function decodeMsrs(bytes: Uint8Array<ArrayBuffer>, count: number): KvmMsrEntry[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const entries: KvmMsrEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = KvmStructSize.msrs + i * KvmStructSize.msrEntry;
    entries.push({
      index: view.getUint32(at + MsrEntryLayout.index, true),
      data: view.getBigUint64(at + MsrEntryLayout.data, true),
    });
  }
  return entries;
}
