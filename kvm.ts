/**
 * KVM for membacking: {@linkcode KvmPartition} maps the regions a
 * `GuestMemoryManager` makes visible into a KVM VM as memory slots, and the
 * fd wrappers (one type per kind of KVM fd, one method per ioctl, in the
 * style of rust-vmm's kvm-ioctls) drive the VM and its vCPUs.
 *
 * @example
 * ```ts
 * import { KvmExit, kvmExitName } from "./kvm.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(kvmExitName(KvmExit.KVM_EXIT_MMIO), "KVM_EXIT_MMIO");
 * ```
 *
 * @module
 */

export { KvmPartition, type KvmPartitionOptions, type KvmSlotInfo } from "./kvm/kvm_partition.ts";
export { KvmPartitionError } from "./kvm/kvm_partition_error.ts";
export { KvmSystem } from "./kvm/kvm_system.ts";
export {
  type KvmClearDirtyLog,
  type KvmDirtyLog,
  type KvmEnableCap,
  type KvmIrqLevel,
  type KvmPitConfig,
  type KvmUserspaceMemoryRegion,
  KvmVm,
} from "./kvm/kvm_vm.ts";
export {
  type KvmInternalErrorExit,
  type KvmIoExit,
  type KvmMemoryFaultExit,
  type KvmMmioExit,
  KvmVcpu,
} from "./kvm/kvm_vcpu.ts";
export { kickVcpu, type KvmVcpuKick } from "./kvm/kvm_vcpu_kick.ts";
export type { KvmCpuidEntry2 } from "./kvm/kvm_cpuid.ts";
export type { KvmMsrEntry } from "./kvm/kvm_msrs.ts";
export {
  type KvmDtableName,
  type KvmRegName,
  KvmRegs,
  type KvmSegment,
  type KvmSegmentName,
  type KvmSregName,
  KvmSregs,
} from "./kvm/kvm_regs.ts";
export {
  KVM_PIT_SPEAKER_DUMMY,
  KvmCap,
  KvmDirtyLogFlag,
  KvmExit,
  kvmExitName,
  KvmInternalError,
  KvmIoDirection,
  KvmMemFlag,
} from "./kvm/kvm_constants.ts";
