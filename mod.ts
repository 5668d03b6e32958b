/**
 * membacking: guest memory for virtual machine monitors on Linux, in Deno.
 *
 * A VMM describes the guest physical address map ({@linkcode MemoryLayout}),
 * builds guest RAM with {@linkcode GuestMemoryBuilder} and gets a
 * {@linkcode GuestMemoryManager}. The manager keeps all guest memory in one
 * host address reservation (host address = base + guest physical address)
 * and decides, by region priority, what the guest sees at each address:
 * RAM (priority 255) over device memory (priority 0), RAM pieces that can be
 * hidden or made read-only ({@linkcode RamVisibilityControl}), device
 * memory placed and moved at run time ({@linkcode DeviceMemoryMapper}). It
 * keeps every attached {@linkcode Partition} (a KVM VM: see the `./kvm`
 * entry point) and every {@linkcode DmaTarget} in step, and reads and writes
 * guest memory for the host with every access checked
 * ({@linkcode GuestMemory}).
 *
 * Entry points: this one; `./kvm` (the KVM partition and the KVM fd
 * wrappers); `./testing` (a recording partition and a guest probe, for
 * tests and for hosts without KVM).
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, MemoryLayout, MemoryRange } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const layout = MemoryLayout.fromGaps(1n << 30n, [new MemoryRange(0xe0000000n, 0x100000000n)]);
 * assert.equal(`${layout.ram()[0]}`, "0x0-0x40000000");
 * ```
 *
 * @module
 */

export { MemoryRange } from "./layout/memory_range.ts";
export { MemorySize } from "./layout/memory_size.ts";
export { MemoryLayout, type MemoryLayoutOptions } from "./layout/memory_layout.ts";
export { MemoryLayoutError } from "./layout/memory_layout_error.ts";

export { GuestMemoryBuilder } from "./builder.ts";
export { MemoryBuildError } from "./manager/memory_build_error.ts";
export { GuestMemoryManager } from "./manager/guest_memory_manager.ts";
export { SharedMemoryBacking } from "./manager/shared_memory_backing.ts";
export { Vtl } from "./manager/vtl.ts";
export { PartitionAttachment } from "./manager/partition_attachment.ts";
export { PartitionAttachError } from "./manager/partition_attach_error.ts";
export { PrefetchError } from "./manager/prefetch_error.ts";

export { GuestMemoryClient } from "./guest_memory/guest_memory_client.ts";
export { GuestMemory } from "./guest_memory/guest_memory.ts";
export { GuestMemoryError } from "./guest_memory/guest_memory_error.ts";

export { RamVisibility, RamVisibilityControl } from "./regions/ram_visibility_control.ts";
export { RegionError } from "./regions/region_error.ts";
export { DmaMapperClient } from "./regions/dma_mapper_client.ts";
export type { DmaTarget } from "./regions/dma_target.ts";
export { DeviceMemoryMapper } from "./device_memory/device_memory_mapper.ts";
export { DeviceMemoryControl } from "./device_memory/device_memory_control.ts";
export { DeviceMemoryRegion } from "./device_memory/device_memory_region.ts";

export type { Partition } from "./partition/partition.ts";
export type { Mappable } from "./mapping/mappable.ts";

export { SyscallError } from "./ffi/syscall_error.ts";
export { MissingPermissionError } from "./ffi/missing_permission_error.ts";
export { DisposedError } from "./diagnostics/disposed_error.ts";
export { setWarningHandler } from "./diagnostics/warnings.ts";
