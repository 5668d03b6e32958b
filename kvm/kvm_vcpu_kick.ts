/**
 * Kicking a vCPU from another thread: see `KvmVcpu.kickHandle`.
 *
 * @module
 */

import { hostBytes } from "../ffi/_host_memory.ts";
import { KvmRunLayout } from "./kvm_constants.ts";

/**
 * A token for {@linkcode kickVcpu}, from `KvmVcpu.kickHandle`: the host
 * address of the vCPU's `kvm_run` as a plain bigint, so that it can be
 * posted to a `Worker`.
 *
 * @example
 * ```ts
 * import { KvmSystem } from "../kvm.ts";
 * import type { KvmVcpuKick } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * using kvm = KvmSystem.open();
 * using vm = kvm.createVm();
 * using vcpu = vm.createVcpu(0);
 * const kick: KvmVcpuKick = vcpu.kickHandle();
 * assert.deepEqual(structuredClone(kick), kick); // survives postMessage
 * ```
 */
export interface KvmVcpuKick {
  /** Host address of the vCPU's `kvm_run` mapping. */
  readonly runAddress: bigint;
}

/**
 * Sets `immediate_exit` in the `kvm_run` of the vCPU `kick` was made for,
 * from any thread: that vCPU's current or next `KVM_RUN` returns
 * `KVM_EXIT_INTR` (see `KvmVcpu.kickHandle` for when it takes effect).
 * The vCPU must still exist: a token of a disposed vCPU points at unmapped
 * memory, and the store would kill the process.
 *
 * @param kick The vCPU's token.
 * @example
 * ```ts
 * import { kickVcpu, KvmExit, KvmSystem } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * using kvm = KvmSystem.open();
 * using vm = kvm.createVm();
 * using vcpu = vm.createVcpu(0);
 * kickVcpu(vcpu.kickHandle()); // usually from a Worker the token was posted to
 * assert.equal(vcpu.immediateExit, true);
 * assert.equal(vcpu.run(), KvmExit.KVM_EXIT_INTR);
 * vcpu.immediateExit = false;
 * ```
 */
export function kickVcpu(kick: KvmVcpuKick): void {
  const bytes = hostBytes(kick.runAddress, BigInt(KvmRunLayout.exitUnion));
  Atomics.store(bytes, KvmRunLayout.immediateExit, 1);
}
