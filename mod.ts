/**
 * membacking: guest memory management for virtual machine monitors on
 * Linux, in Deno. Allocates guest RAM, lays it out in one host address
 * reservation, decides by region priority what the guest sees at each
 * address, and maps it into KVM virtual machines.
 *
 * @example
 * ```ts
 * import { MemoryRange, MemorySize } from "./mod.ts";
 * console.log(`${new MemoryRange(0n, 0x100000n)}`, `${new MemorySize(1n << 30n)}`);
 * ```
 *
 * @module
 */

// Core value types.
export { MAX_ADDRESS, MemoryRange, PAGE_SIZE, subtractRanges } from "./layout/memory_range.ts";
export { MemorySize } from "./layout/memory_size.ts";
export { MemoryLayout } from "./layout/memory_layout.ts";
export type { MemoryLayoutOptions } from "./layout/memory_layout.ts";
export { MemoryLayoutError } from "./layout/memory_layout_error.ts";
export type { MemoryLayoutErrorKind } from "./layout/memory_layout_error.ts";

// FFI layer: errors and owned resources.
export { SyscallError } from "./ffi/syscall_error.ts";
export { MissingPermissionError } from "./ffi/missing_permission_error.ts";
export { OwnedFd } from "./ffi/_owned_fd.ts";

// Host address reservation and backing objects.
export type { Mappable } from "./mapping/mappable.ts";
export { VaEntry, VaMapper } from "./mapping/_va_mapper.ts";
export type { VaBackingKind } from "./mapping/_va_mapper.ts";

// Guest memory access.
export { GuestMemoryClient } from "./guest_memory/guest_memory_client.ts";
export { GuestMemory } from "./guest_memory/guest_memory.ts";
export { GuestMemoryError } from "./guest_memory/guest_memory_error.ts";
export type { GuestMemoryAccess, GuestMemoryErrorKind } from "./guest_memory/guest_memory_error.ts";

// Partitions.
export type { Partition } from "./partition/partition.ts";
export { PartitionMapper } from "./partition/_partition_mapper.ts";
export type { MapParams } from "./partition/_partition_mapper.ts";
export { PartitionMapperError } from "./partition/_partition_mapper_error.ts";
export type { PartitionMapperErrorKind } from "./partition/_partition_mapper_error.ts";
export { RecordingPartition } from "./testing/recording_partition.ts";
export type {
  PartitionEvent,
  RecordedMapping,
  RecordingPartitionOptions,
} from "./testing/recording_partition.ts";
export { KvmPartition } from "./kvm/kvm_partition.ts";
export type { KvmPartitionOptions, KvmSlotInfo } from "./kvm/kvm_partition.ts";
export { KvmPartitionError } from "./kvm/kvm_partition_error.ts";
export type { KvmPartitionErrorKind } from "./kvm/kvm_partition_error.ts";
export { GuestProbe } from "./testing/guest_probe.ts";
export type { GuestProbeOptions, ProbeResult, ProbeSize } from "./testing/guest_probe.ts";

// KVM wrappers (one type per fd kind, one method per ioctl).
export { KvmSystem } from "./kvm/kvm_system.ts";
export { KvmVm } from "./kvm/kvm_vm.ts";
export { KvmVcpu } from "./kvm/kvm_vcpu.ts";
export type { KvmMemoryFaultExit, KvmMmioExit } from "./kvm/kvm_vcpu.ts";
export { KvmRegs, KvmSregs } from "./kvm/kvm_regs.ts";
export type {
  KvmDtableName,
  KvmRegName,
  KvmSegment,
  KvmSegmentName,
  KvmSregName,
} from "./kvm/kvm_regs.ts";
export { KvmCap, KvmExit, kvmExitName, KvmMemFlag } from "./kvm/kvm_constants.ts";

// Regions: the priority map, DMA targets, device memory, RAM visibility.
export { RegionManager } from "./regions/_region_manager.ts";
export type { DmaTargetHandle, RegionInfo } from "./regions/_region_manager.ts";
export { RegionHandle } from "./regions/_region_handle.ts";
export type { RegionMapping } from "./regions/_region_tree.ts";
export { RegionError } from "./regions/region_error.ts";
export type { RegionErrorKind } from "./regions/region_error.ts";
export { RegionOverlapError } from "./regions/region_overlap_error.ts";
export type { DmaTarget } from "./regions/dma_target.ts";
export { DmaMapperClient } from "./regions/dma_mapper_client.ts";
export { DeviceMemoryMapper } from "./device_memory/device_memory_mapper.ts";
export type { DeviceMemory } from "./device_memory/device_memory_mapper.ts";
export { DeviceMemoryControl } from "./device_memory/device_memory_control.ts";
export { DeviceMemoryRegion } from "./device_memory/device_memory_region.ts";
export { RamVisibility, RamVisibilityControl } from "./regions/ram_visibility_control.ts";
export type { RamRegionEntry } from "./regions/ram_visibility_control.ts";
export { InvalidRamRegionError } from "./regions/invalid_ram_region_error.ts";
export { splitX86LegacyRam } from "./regions/_x86_legacy.ts";

// Builder and manager.
export { GuestMemoryBuilder, PRIVATE_RAM_NAME, RAM_PRIORITY, VA_ALIGNMENT } from "./builder.ts";
export { GuestMemoryManager } from "./manager/guest_memory_manager.ts";
export type { GuestMemoryManagerParts, RamRegion } from "./manager/guest_memory_manager.ts";
export { MemoryBuildError } from "./manager/memory_build_error.ts";
export type { MemoryBuildErrorDetail, MemoryBuildErrorKind } from "./manager/memory_build_error.ts";
export { DEFAULT_HUGEPAGE_SIZE } from "./manager/_hugepage_validation.ts";
export { SharedMemoryBacking } from "./manager/shared_memory_backing.ts";
export { PartitionAttachError } from "./manager/partition_attach_error.ts";
export { PartitionAttachment } from "./manager/partition_attachment.ts";
export { Vtl } from "./manager/vtl.ts";

// Diagnostics.
export { setWarningHandler } from "./diagnostics/warnings.ts";
export type { Warning, WarningHandler } from "./diagnostics/warnings.ts";
