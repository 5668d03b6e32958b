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
 * import type { KvmVcpuKick } from "./kvm_vcpu_kick.ts";
 * const message: { kick: KvmVcpuKick } = { kick: { runAddress: 0x7f0000000000n } };
 * console.log(typeof message.kick.runAddress); // bigint
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
 * ```ts ignore
 * // In a Worker started with the token in a message:
 * import { kickVcpu } from "@membacking/membacking/kvm";
 * self.onmessage = (e) => setTimeout(() => kickVcpu(e.data.kick), 1000);
 * ```
 */
export function kickVcpu(kick: KvmVcpuKick): void {
  const bytes = hostBytes(kick.runAddress, BigInt(KvmRunLayout.exitUnion));
  Atomics.store(bytes, KvmRunLayout.immediateExit, 1);
}
