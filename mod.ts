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

// FFI layer: errors and owned resources.
export { SyscallError } from "./ffi/syscall_error.ts";
export { MissingPermissionError } from "./ffi/missing_permission_error.ts";
export { OwnedFd } from "./ffi/owned_fd.ts";

// Host address reservation and backing objects.
export type { Mappable } from "./mapping/mappable.ts";
export { VaEntry, VaMapper } from "./mapping/va_mapper.ts";
export type { VaBackingKind } from "./mapping/va_mapper.ts";

// Partitions.
export type { Partition } from "./partition/partition.ts";
export { PartitionMapper } from "./partition/partition_mapper.ts";
export type { MapParams } from "./partition/partition_mapper.ts";
export { PartitionMapperError } from "./partition/partition_mapper_error.ts";
export type { PartitionMapperErrorKind } from "./partition/partition_mapper_error.ts";

// Diagnostics.
export { setWarningHandler } from "./diagnostics/warnings.ts";
export type { Warning, WarningHandler } from "./diagnostics/warnings.ts";
