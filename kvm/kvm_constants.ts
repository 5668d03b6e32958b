/**
 * KVM ioctl numbers, capability numbers, flags, exit reasons and the byte
 * layouts of the structures the library passes to KVM, for x86_64.
 *
 * Sources: `include/uapi/linux/kvm.h` (generic API) and
 * `arch/x86/include/uapi/asm/kvm.h` (x86 register structures). Request
 * numbers are computed with the `_IO`/`_IOR`/`_IOW`/`_IOWR` encoding of
 * `include/uapi/asm-generic/ioctl.h`.
 *
 * @module
 */

/** `KVMIO`, the ioctl type byte of every KVM request (`include/uapi/linux/kvm.h`). */
export const KVMIO = 0xae;

const IOC_NONE = 0n;
const IOC_WRITE = 1n;
const IOC_READ = 2n;

/** `_IOC(dir, type, nr, size)` (`include/uapi/asm-generic/ioctl.h`). */
function ioc(dir: bigint, nr: number, size: number): bigint {
  return (dir << 30n) | (BigInt(size) << 16n) | (BigInt(KVMIO) << 8n) | BigInt(nr);
}

/** Byte sizes of the structures passed by pointer. */
export const KvmStructSize = {
  /** `struct kvm_userspace_memory_region` (`include/uapi/linux/kvm.h`). */
  userspaceMemoryRegion: 32,
  /** `struct kvm_regs` (`arch/x86/include/uapi/asm/kvm.h`): 18 `__u64`. */
  regs: 144,
  /** `struct kvm_sregs` (`arch/x86/include/uapi/asm/kvm.h`). */
  sregs: 312,
  /** `struct kvm_pre_fault_memory` (`include/uapi/linux/kvm.h`). */
  preFaultMemory: 64,
  /** `struct kvm_irq_level` (`include/uapi/linux/kvm.h`): `{ __u32 irq; __u32 level; }`. */
  irqLevel: 8,
  /** `struct kvm_pit_config` (`include/uapi/linux/kvm.h`): `{ __u32 flags; __u32 pad[15]; }`. */
  pitConfig: 64,
  /** `struct kvm_cpuid2` header (`arch/x86/include/uapi/asm/kvm.h`): `{ __u32 nent; __u32 padding; }`. */
  cpuid2: 8,
  /** `struct kvm_cpuid_entry2` (`arch/x86/include/uapi/asm/kvm.h`). */
  cpuidEntry2: 40,
  /** `struct kvm_msrs` header (`arch/x86/include/uapi/asm/kvm.h`): `{ __u32 nmsrs; __u32 pad; }`. */
  msrs: 8,
  /** `struct kvm_msr_entry` (`arch/x86/include/uapi/asm/kvm.h`). */
  msrEntry: 16,
  /** `struct kvm_dirty_log` (`include/uapi/linux/kvm.h`): `{ __u32 slot; __u32 padding1; __u64 dirty_bitmap; }`. */
  dirtyLog: 16,
  /**
   * `struct kvm_clear_dirty_log` (`include/uapi/linux/kvm.h`):
   * `{ __u32 slot; __u32 num_pages; __u64 first_page; __u64 dirty_bitmap; }`.
   */
  clearDirtyLog: 24,
  /**
   * `struct kvm_enable_cap` (`include/uapi/linux/kvm.h`):
   * `{ __u32 cap; __u32 flags; __u64 args[4]; __u8 pad[64]; }`.
   */
  enableCap: 104,
} as const;

/**
 * KVM ioctl request numbers (`include/uapi/linux/kvm.h`). System ioctls go to
 * the `/dev/kvm` fd, VM ioctls to a VM fd, vCPU ioctls to a vCPU fd.
 */
export const KvmIoctl = {
  /** `_IO(KVMIO, 0x00)`: system; returns the API version (12). */
  KVM_GET_API_VERSION: ioc(IOC_NONE, 0x00, 0),
  /** `_IO(KVMIO, 0x01)`: system; returns a new VM fd. */
  KVM_CREATE_VM: ioc(IOC_NONE, 0x01, 0),
  /** `_IO(KVMIO, 0x03)`: system or VM; returns a capability's value (0 = absent). */
  KVM_CHECK_EXTENSION: ioc(IOC_NONE, 0x03, 0),
  /** `_IOWR(KVMIO, 0x05, struct kvm_cpuid2)`: system (x86); the CPUID leaves KVM supports. */
  KVM_GET_SUPPORTED_CPUID: ioc(IOC_READ | IOC_WRITE, 0x05, KvmStructSize.cpuid2),
  /** `_IO(KVMIO, 0x04)`: system; returns the size of the vCPU's `kvm_run` mapping. */
  KVM_GET_VCPU_MMAP_SIZE: ioc(IOC_NONE, 0x04, 0),
  /** `_IOW(KVMIO, 0x42, struct kvm_dirty_log)`: VM; copies a slot's dirty bitmap (and clears it unless manual protect is on). */
  KVM_GET_DIRTY_LOG: ioc(IOC_WRITE, 0x42, KvmStructSize.dirtyLog),
  /** `_IO(KVMIO, 0x41)`: VM; returns a new vCPU fd. */
  KVM_CREATE_VCPU: ioc(IOC_NONE, 0x41, 0),
  /** `_IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)`: VM. */
  KVM_SET_USER_MEMORY_REGION: ioc(IOC_WRITE, 0x46, KvmStructSize.userspaceMemoryRegion),
  /** `_IO(KVMIO, 0x47)`: VM (x86); address of a 3-page region for the real-mode TSS. */
  KVM_SET_TSS_ADDR: ioc(IOC_NONE, 0x47, 0),
  /** `_IOW(KVMIO, 0xa3, struct kvm_enable_cap)`: VM (or vCPU); turns a capability on. */
  KVM_ENABLE_CAP: ioc(IOC_WRITE, 0xa3, KvmStructSize.enableCap),
  /** `_IOWR(KVMIO, 0xc0, struct kvm_clear_dirty_log)`: VM; clears (and write-protects again) dirty pages of a slot. */
  KVM_CLEAR_DIRTY_LOG: ioc(IOC_READ | IOC_WRITE, 0xc0, KvmStructSize.clearDirtyLog),
  /** `_IO(KVMIO, 0x60)`: VM; creates the in-kernel PIC, IOAPIC and local APICs. */
  KVM_CREATE_IRQCHIP: ioc(IOC_NONE, 0x60, 0),
  /** `_IOW(KVMIO, 0x61, struct kvm_irq_level)`: VM; raises or lowers an interrupt line. */
  KVM_IRQ_LINE: ioc(IOC_WRITE, 0x61, KvmStructSize.irqLevel),
  /** `_IOW(KVMIO, 0x77, struct kvm_pit_config)`: VM; creates the in-kernel i8254 PIT. */
  KVM_CREATE_PIT2: ioc(IOC_WRITE, 0x77, KvmStructSize.pitConfig),
  /** `_IO(KVMIO, 0x80)`: vCPU; runs the guest until an exit. */
  KVM_RUN: ioc(IOC_NONE, 0x80, 0),
  /** `_IOR(KVMIO, 0x81, struct kvm_regs)`: vCPU. */
  KVM_GET_REGS: ioc(IOC_READ, 0x81, KvmStructSize.regs),
  /** `_IOW(KVMIO, 0x82, struct kvm_regs)`: vCPU. */
  KVM_SET_REGS: ioc(IOC_WRITE, 0x82, KvmStructSize.regs),
  /** `_IOR(KVMIO, 0x83, struct kvm_sregs)`: vCPU. */
  KVM_GET_SREGS: ioc(IOC_READ, 0x83, KvmStructSize.sregs),
  /** `_IOW(KVMIO, 0x84, struct kvm_sregs)`: vCPU. */
  KVM_SET_SREGS: ioc(IOC_WRITE, 0x84, KvmStructSize.sregs),
  /** `_IOWR(KVMIO, 0x88, struct kvm_msrs)`: vCPU (x86); returns how many MSRs were read. */
  KVM_GET_MSRS: ioc(IOC_READ | IOC_WRITE, 0x88, KvmStructSize.msrs),
  /** `_IOW(KVMIO, 0x89, struct kvm_msrs)`: vCPU (x86); returns how many MSRs were written. */
  KVM_SET_MSRS: ioc(IOC_WRITE, 0x89, KvmStructSize.msrs),
  /** `_IOW(KVMIO, 0x90, struct kvm_cpuid2)`: vCPU (x86); what CPUID returns in the guest. */
  KVM_SET_CPUID2: ioc(IOC_WRITE, 0x90, KvmStructSize.cpuid2),
  /** `_IOWR(KVMIO, 0xd5, struct kvm_pre_fault_memory)`: vCPU (Linux 6.10+). */
  KVM_PRE_FAULT_MEMORY: ioc(IOC_READ | IOC_WRITE, 0xd5, KvmStructSize.preFaultMemory),
} as const;

/** The only KVM API version there is (`KVM_API_VERSION`, `include/uapi/linux/kvm.h`). */
export const KVM_API_VERSION = 12;

/**
 * Capabilities for `KVM_CHECK_EXTENSION` (`include/uapi/linux/kvm.h`).
 *
 * @example
 * ```ts
 * import { KvmCap, KvmSystem } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(KvmCap.KVM_CAP_NR_MEMSLOTS, 10);
 * using kvm = KvmSystem.open();
 * assert.equal(kvm.checkExtension(KvmCap.KVM_CAP_USER_MEMORY), 1);
 * ```
 */
export const KvmCap = {
  /** `KVM_SET_USER_MEMORY_REGION` is available. */
  KVM_CAP_USER_MEMORY: 3,
  /** Maximum number of memory slots per VM (per address space). */
  KVM_CAP_NR_MEMSLOTS: 10,
  /** `KVM_MEM_READONLY` slots are supported. */
  KVM_CAP_READONLY_MEM: 81,
  /** `KVM_EXIT_MEMORY_FAULT` details accompany some `EFAULT`s of `KVM_RUN`. */
  KVM_CAP_MEMORY_FAULT_INFO: 232,
  /** `KVM_CREATE_IRQCHIP` is available. */
  KVM_CAP_IRQCHIP: 0,
  /** `KVM_CREATE_PIT2` is available. */
  KVM_CAP_PIT2: 33,
  /** `kvm_run.internal.ndata` and `data` are filled on `KVM_EXIT_INTERNAL_ERROR`. */
  KVM_CAP_INTERNAL_ERROR_INFO: 54,
  /** `kvm_run.immediate_exit` is honoured. */
  KVM_CAP_IMMEDIATE_EXIT: 136,
  /** `KVM_PRE_FAULT_MEMORY` is available. */
  KVM_CAP_PRE_FAULT_MEMORY: 236,
  /**
   * `KVM_CLEAR_DIRTY_LOG` exists and, once enabled with `KVM_ENABLE_CAP`,
   * `KVM_GET_DIRTY_LOG` stops clearing (and write-protecting) the log: the
   * VMM clears what it has handled. The value lists the `KVM_DIRTY_LOG_*` flags allowed.
   */
  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: 168,
} as const;

/**
 * `args[0]` flags of `KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)` (`include/uapi/linux/kvm.h`).
 *
 * @example
 * ```ts
 * import { KvmDirtyLogFlag } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(KvmDirtyLogFlag.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE, 1);
 * ```
 */
export const KvmDirtyLogFlag = {
  /** `1 << 0`: `KVM_GET_DIRTY_LOG` only reads; `KVM_CLEAR_DIRTY_LOG` clears. */
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE: 1 << 0,
  /** `1 << 1`: a slot's bitmap starts all ones when logging is turned on (not used here). */
  KVM_DIRTY_LOG_INITIALLY_SET: 1 << 1,
} as const;

/**
 * `kvm_userspace_memory_region.flags` bits (`include/uapi/linux/kvm.h`).
 *
 * @example
 * ```ts
 * import { KvmMemFlag } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(KvmMemFlag.KVM_MEM_LOG_DIRTY_PAGES | KvmMemFlag.KVM_MEM_READONLY, 3);
 * ```
 */
export const KvmMemFlag = {
  /** `1 << 0`: track dirty pages. */
  KVM_MEM_LOG_DIRTY_PAGES: 1 << 0,
  /** `1 << 1`: guest writes exit to userspace as MMIO. */
  KVM_MEM_READONLY: 1 << 1,
} as const;

/**
 * `kvm_run.exit_reason` values (`include/uapi/linux/kvm.h`).
 *
 * @example
 * ```ts
 * import { KvmExit } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(KvmExit.KVM_EXIT_MMIO, 6);
 * ```
 */
export const KvmExit = {
  KVM_EXIT_UNKNOWN: 0,
  KVM_EXIT_EXCEPTION: 1,
  KVM_EXIT_IO: 2,
  KVM_EXIT_HYPERCALL: 3,
  KVM_EXIT_DEBUG: 4,
  KVM_EXIT_HLT: 5,
  KVM_EXIT_MMIO: 6,
  KVM_EXIT_IRQ_WINDOW_OPEN: 7,
  KVM_EXIT_SHUTDOWN: 8,
  KVM_EXIT_FAIL_ENTRY: 9,
  KVM_EXIT_INTR: 10,
  KVM_EXIT_INTERNAL_ERROR: 17,
  KVM_EXIT_SYSTEM_EVENT: 24,
  KVM_EXIT_MEMORY_FAULT: 39,
} as const;

/**
 * `kvm_run.io.direction` values (`KVM_EXIT_IO_IN`, `KVM_EXIT_IO_OUT`, `include/uapi/linux/kvm.h`).
 *
 * @example
 * ```ts
 * import { KvmIoDirection } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(KvmIoDirection.KVM_EXIT_IO_OUT, 1);
 * ```
 */
export const KvmIoDirection = {
  /** The guest executed `in`/`ins`: fill the data area before the next `KVM_RUN`. */
  KVM_EXIT_IO_IN: 0,
  /** The guest executed `out`/`outs`: the data area holds what it wrote. */
  KVM_EXIT_IO_OUT: 1,
} as const;

/**
 * `kvm_run.internal.suberror` values (`KVM_INTERNAL_ERROR_*`, `include/uapi/linux/kvm.h`).
 *
 * @example
 * ```ts
 * import { KvmInternalError } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(KvmInternalError.KVM_INTERNAL_ERROR_EMULATION, 1);
 * ```
 */
export const KvmInternalError = {
  /** KVM could not emulate an instruction (e.g. one that touched MMIO in an unsupported way). */
  KVM_INTERNAL_ERROR_EMULATION: 1,
  /** An exception was raised while delivering another one. */
  KVM_INTERNAL_ERROR_SIMUL_EX: 2,
  /** An event was being delivered when an exit happened that KVM cannot handle then. */
  KVM_INTERNAL_ERROR_DELIVERY_EV: 3,
  /** An exit reason KVM does not know. */
  KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: 4,
} as const;

/**
 * `kvm_pit_config.flags`: the PIT emulates port 0x61 itself (`include/uapi/linux/kvm.h`).
 *
 * @example
 * ```ts
 * import { KVM_PIT_SPEAKER_DUMMY, KvmSystem } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * using kvm = KvmSystem.open();
 * using vm = kvm.createVm();
 * vm.createIrqchip();
 * vm.createPit2({ flags: KVM_PIT_SPEAKER_DUMMY });
 * assert.equal(KVM_PIT_SPEAKER_DUMMY, 1);
 * ```
 */
export const KVM_PIT_SPEAKER_DUMMY = 1;

/**
 * Offsets in `struct kvm_cpuid_entry2` (40 bytes, `arch/x86/include/uapi/asm/kvm.h`):
 * `{ __u32 function, index, flags, eax, ebx, ecx, edx; __u32 padding[3]; }`.
 */
export const CpuidEntry2Layout = {
  function: 0,
  index: 4,
  flags: 8,
  eax: 12,
  ebx: 16,
  ecx: 20,
  edx: 24,
} as const;

/**
 * Offsets in `struct kvm_msr_entry` (16 bytes, `arch/x86/include/uapi/asm/kvm.h`):
 * `{ __u32 index; __u32 reserved; __u64 data; }`.
 */
export const MsrEntryLayout = {
  index: 0,
  data: 8,
} as const;

/**
 * The symbolic name of an exit reason (`KVM_EXIT_MMIO`), or `KVM_EXIT_<n>`.
 *
 * @example
 * ```ts
 * import { kvmExitName } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(kvmExitName(8), "KVM_EXIT_SHUTDOWN");
 * assert.equal(kvmExitName(99), "KVM_EXIT_99");
 * ```
 */
export function kvmExitName(reason: number): string {
  for (const [name, value] of Object.entries(KvmExit)) {
    if (value === reason) return name;
  }
  return `KVM_EXIT_${reason}`;
}

/**
 * Offsets in `struct kvm_userspace_memory_region` (`include/uapi/linux/kvm.h`):
 * `{ __u32 slot; __u32 flags; __u64 guest_phys_addr; __u64 memory_size; __u64 userspace_addr; }`.
 */
export const UserspaceMemoryRegionLayout = {
  slot: 0, // __u32
  flags: 4, // __u32
  guestPhysAddr: 8, // __u64
  memorySize: 16, // __u64 (0 deletes the slot)
  userspaceAddr: 24, // __u64
} as const;

/** Offsets in `struct kvm_dirty_log` (`include/uapi/linux/kvm.h`). */
export const DirtyLogLayout = {
  slot: 0, // __u32
  dirtyBitmap: 8, // __u64 (a pointer: one bit per page, in __u64 words)
} as const;

/** Offsets in `struct kvm_clear_dirty_log` (`include/uapi/linux/kvm.h`). */
export const ClearDirtyLogLayout = {
  slot: 0, // __u32
  numPages: 4, // __u32
  firstPage: 8, // __u64 (a multiple of 64)
  dirtyBitmap: 16, // __u64 (a pointer; bit i is page first_page + i)
} as const;

/** Offsets in `struct kvm_enable_cap` (`include/uapi/linux/kvm.h`). */
export const EnableCapLayout = {
  cap: 0, // __u32
  flags: 4, // __u32
  args: 8, // __u64[4]
} as const;

/**
 * Offsets in `struct kvm_pre_fault_memory` (`include/uapi/linux/kvm.h`):
 * `{ __u64 gpa; __u64 size; __u64 flags; __u64 padding[5]; }`. KVM advances
 * `gpa` and shrinks `size` as it makes progress.
 */
export const PreFaultMemoryLayout = {
  gpa: 0, // __u64
  size: 8, // __u64
  flags: 16, // __u64 (must be 0)
} as const;

/**
 * Offsets in `struct kvm_regs` (`arch/x86/include/uapi/asm/kvm.h`): 18
 * `__u64` in this order.
 */
export const RegsLayout = {
  rax: 0,
  rbx: 8,
  rcx: 16,
  rdx: 24,
  rsi: 32,
  rdi: 40,
  rsp: 48,
  rbp: 56,
  r8: 64,
  r9: 72,
  r10: 80,
  r11: 88,
  r12: 96,
  r13: 104,
  r14: 112,
  r15: 120,
  rip: 128,
  rflags: 136,
} as const;

/**
 * Offsets in `struct kvm_segment` (24 bytes, `arch/x86/include/uapi/asm/kvm.h`):
 * `{ __u64 base; __u32 limit; __u16 selector; __u8 type, present, dpl, db, s, l, g, avl, unusable, padding; }`.
 */
export const SegmentLayout = {
  base: 0, // __u64
  limit: 8, // __u32
  selector: 12, // __u16
  type: 14, // __u8
  present: 15,
  dpl: 16,
  db: 17,
  s: 18,
  l: 19,
  g: 20,
  avl: 21,
  unusable: 22,
  size: 24,
} as const;

/**
 * Offsets in `struct kvm_dtable` (16 bytes): `{ __u64 base; __u16 limit; __u16 padding[3]; }`.
 */
export const DtableLayout = {
  base: 0, // __u64
  limit: 8, // __u16
  size: 16,
} as const;

/**
 * Offsets in `struct kvm_sregs` (312 bytes, `arch/x86/include/uapi/asm/kvm.h`):
 * eight `kvm_segment` (cs, ds, es, fs, gs, ss, tr, ldt), two `kvm_dtable`
 * (gdt, idt), then `__u64` cr0, cr2, cr3, cr4, cr8, efer, apic_base and
 * `__u64 interrupt_bitmap[4]`.
 */
export const SregsLayout = {
  cs: 0,
  ds: 24,
  es: 48,
  fs: 72,
  gs: 96,
  ss: 120,
  tr: 144,
  ldt: 168,
  gdt: 192,
  idt: 208,
  cr0: 224,
  cr2: 232,
  cr3: 240,
  cr4: 248,
  cr8: 256,
  efer: 264,
  apicBase: 272,
  interruptBitmap: 280, // __u64[4]
} as const;

/**
 * Offsets in `struct kvm_run` (the mmap of a vCPU fd, `include/uapi/linux/kvm.h`).
 * The exit-specific union starts at 32.
 */
export const KvmRunLayout = {
  /** `__u8 request_interrupt_window` */
  requestInterruptWindow: 0,
  /** `__u8 immediate_exit`: when 1, `KVM_RUN` completes pending I/O and returns EINTR. */
  immediateExit: 1,
  /** `__u32 exit_reason` */
  exitReason: 8,
  /** Start of the exit union. */
  exitUnion: 32,
  /** mmio: `__u64 phys_addr` */
  mmioPhysAddr: 32,
  /** mmio: `__u8 data[8]` */
  mmioData: 40,
  /** mmio: `__u32 len` */
  mmioLen: 48,
  /** mmio: `__u8 is_write` */
  mmioIsWrite: 52,
  /** memory_fault: `__u64 flags` */
  memoryFaultFlags: 32,
  /** memory_fault: `__u64 gpa` */
  memoryFaultGpa: 40,
  /** memory_fault: `__u64 size` */
  memoryFaultSize: 48,
  /** fail_entry: `__u64 hardware_entry_failure_reason` */
  failEntryReason: 32,
  /** io: `__u8 direction` ({@linkcode KvmIoDirection}) */
  ioDirection: 32,
  /** io: `__u8 size`, bytes per element (1, 2 or 4) */
  ioSize: 33,
  /** io: `__u16 port` */
  ioPort: 34,
  /** io: `__u32 count`, elements (more than 1 for `rep ins`/`rep outs`) */
  ioCount: 36,
  /** io: `__u64 data_offset`, where the data lies, from the start of `kvm_run` */
  ioDataOffset: 40,
  /** internal: `__u32 suberror` */
  internalSuberror: 32,
  /** internal: `__u32 ndata` (with `KVM_CAP_INTERNAL_ERROR_INFO`) */
  internalNdata: 36,
  /** internal: `__u64 data[16]` */
  internalData: 40,
  /** Entries of `internal.data`. */
  internalDataMax: 16,
} as const;
