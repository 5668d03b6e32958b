import { bufferAddress } from "../ffi/_host_memory.ts";
import { ioctlStruct, ioctlValue } from "../ffi/_ioctl.ts";
import { OwnedFd } from "../ffi/_owned_fd.ts";
import {
  ClearDirtyLogLayout,
  DirtyLogLayout,
  EnableCapLayout,
  KvmIoctl,
  KvmStructSize,
  UserspaceMemoryRegionLayout,
} from "./kvm_constants.ts";
import { type KvmVcpu, openVcpu } from "./kvm_vcpu.ts";

/**
 * `struct kvm_userspace_memory_region` (`include/uapi/linux/kvm.h`): one KVM
 * memory slot. The same record with `memorySize` 0 deletes the slot.
 *
 * @example
 * ```ts
 * import { KvmMemFlag } from "../kvm.ts";
 * import type { KvmUserspaceMemoryRegion } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const rom: KvmUserspaceMemoryRegion = {
 *   slot: 1, flags: KvmMemFlag.KVM_MEM_READONLY, guestPhysAddr: 0xffff0000n,
 *   memorySize: 0x10000n, userspaceAddr: 0x7f0000000000n,
 * };
 * assert.equal(rom.guestPhysAddr + rom.memorySize, 1n << 32n); // the top 64 KiB below 4 GiB
 * const deleteRom: KvmUserspaceMemoryRegion = { ...rom, memorySize: 0n };
 * assert.deepEqual([deleteRom.slot, deleteRom.memorySize], [1, 0n]);
 * ```
 */
export interface KvmUserspaceMemoryRegion {
  /** `__u32 slot`: the slot number. */
  readonly slot: number;
  /** `__u32 flags`: `KVM_MEM_*` bits ({@linkcode KvmMemFlag}). */
  readonly flags: number;
  /** `__u64 guest_phys_addr`. */
  readonly guestPhysAddr: bigint;
  /** `__u64 memory_size`, in bytes (0 deletes the slot). */
  readonly memorySize: bigint;
  /** `__u64 userspace_addr`: the host address backing `guestPhysAddr`. */
  readonly userspaceAddr: bigint;
}

/**
 * `struct kvm_irq_level` (`include/uapi/linux/kvm.h`): an interrupt line
 * (a GSI: 0-15 reach both the PIC and the IOAPIC, 16-23 the IOAPIC) and
 * its new level.
 *
 * @example
 * ```ts
 * import type { KvmIrqLevel } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const com1: KvmIrqLevel = { irq: 4, level: 1 };
 * assert.deepEqual([com1, { ...com1, level: 0 }], [{ irq: 4, level: 1 }, { irq: 4, level: 0 }]);
 * ```
 */
export interface KvmIrqLevel {
  /** `__u32 irq`: the GSI. */
  readonly irq: number;
  /** `__u32 level`: 1 raises the line, 0 lowers it (edge interrupts: raise then lower). */
  readonly level: number;
}

/**
 * `struct kvm_pit_config` (`include/uapi/linux/kvm.h`).
 *
 * @example
 * ```ts
 * import { KVM_PIT_SPEAKER_DUMMY } from "../kvm.ts";
 * import type { KvmPitConfig } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const config: KvmPitConfig = { flags: KVM_PIT_SPEAKER_DUMMY };
 * assert.equal(config.flags, 1);
 * ```
 */
export interface KvmPitConfig {
  /** `__u32 flags`: `KVM_PIT_SPEAKER_DUMMY` (1) makes KVM handle port 0x61 too. */
  readonly flags: number;
}

/**
 * `struct kvm_dirty_log` (`include/uapi/linux/kvm.h`): where
 * `KVM_GET_DIRTY_LOG` copies a slot's bitmap. `dirtyBitmap` stands for the
 * kernel's pointer: one bit per page of the slot (bit i of byte j is page
 * 8j + i), at least `ceil(pages / 64) * 8` bytes, in an array with its own
 * `ArrayBuffer`.
 *
 * @example
 * ```ts
 * import type { KvmDirtyLog } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * // A 64-page slot: one __u64 of bitmap.
 * const log: KvmDirtyLog = { slot: 0, dirtyBitmap: new Uint8Array(new ArrayBuffer(8)) };
 * assert.equal(log.dirtyBitmap.length, 8);
 * ```
 */
export interface KvmDirtyLog {
  /** `__u32 slot`: the slot number. */
  readonly slot: number;
  /** `void __user *dirty_bitmap`: filled by the kernel. */
  readonly dirtyBitmap: Uint8Array<ArrayBuffer>;
}

/**
 * `struct kvm_clear_dirty_log` (`include/uapi/linux/kvm.h`): the pages of a
 * slot whose dirty bits `KVM_CLEAR_DIRTY_LOG` clears (and write-protects
 * again): bit i of `dirtyBitmap` is page `firstPage + i`.
 *
 * @example
 * ```ts
 * import type { KvmClearDirtyLog } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const clear: KvmClearDirtyLog = {
 *   slot: 0, numPages: 64, firstPage: 0n, dirtyBitmap: new Uint8Array(new ArrayBuffer(8)).fill(0xff),
 * };
 * assert.equal(clear.numPages, 64);
 * ```
 */
export interface KvmClearDirtyLog {
  /** `__u32 slot`. */
  readonly slot: number;
  /** `__u32 num_pages`: a multiple of 64, or reaching the end of the slot. */
  readonly numPages: number;
  /** `__u64 first_page`: a multiple of 64. */
  readonly firstPage: bigint;
  /** `void __user *dirty_bitmap`: the pages to clear. */
  readonly dirtyBitmap: Uint8Array<ArrayBuffer>;
}

/**
 * `struct kvm_enable_cap` (`include/uapi/linux/kvm.h`).
 *
 * @example
 * ```ts
 * import { KvmCap, KvmDirtyLogFlag } from "../kvm.ts";
 * import type { KvmEnableCap } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const manualProtect: KvmEnableCap = {
 *   cap: KvmCap.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
 *   flags: 0,
 *   args: [BigInt(KvmDirtyLogFlag.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)],
 * };
 * assert.equal(manualProtect.cap, 168);
 * ```
 */
export interface KvmEnableCap {
  /** `__u32 cap`: a {@linkcode KvmCap} value. */
  readonly cap: number;
  /** `__u32 flags`. */
  readonly flags: number;
  /** `__u64 args[4]` (missing ones are 0). */
  readonly args: readonly bigint[];
}

let construct: (fd: OwnedFd, vcpuMmapSize: number) => KvmVm;

/** Wraps a VM fd (for `KvmSystem.createVm`). */
export function openVm(fd: OwnedFd, vcpuMmapSize: number): KvmVm {
  return construct(fd, vcpuMmapSize);
}

/**
 * A KVM VM fd: one method per VM ioctl. Every failure throws a
 * {@linkcode SyscallError} named after the ioctl
 * (`ioctl(KVM_SET_USER_MEMORY_REGION)`).
 *
 * @example
 * ```ts
 * import { KvmSystem } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * using kvm = KvmSystem.open();
 * using vm = kvm.createVm();
 * // KVM checks only that the host range is page aligned; it faults pages in on guest access.
 * const host = 1n << 40n;
 * const slot = { slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: 0x1000n, userspaceAddr: host };
 * vm.setUserMemoryRegion(slot);
 * vm.setUserMemoryRegion({ ...slot, memorySize: 0n }); // deletes it
 * assert.throws(() => vm.setUserMemoryRegion({ ...slot, userspaceAddr: 0x123n }), {
 *   name: "SyscallError",
 *   syscall: "ioctl(KVM_SET_USER_MEMORY_REGION)",
 *   code: "EINVAL",
 * });
 * using vcpu = vm.createVcpu(0);
 * assert.equal(vcpu.id, 0);
 * ```
 */
export class KvmVm implements Disposable {
  readonly #fd: OwnedFd;
  readonly #vcpuMmapSize: number;
  readonly #region = new Uint8Array(KvmStructSize.userspaceMemoryRegion);
  readonly #regionView = new DataView(this.#region.buffer);
  readonly #irqLevel = new Uint8Array(KvmStructSize.irqLevel);
  /** The `kvm_dirty_log` and `kvm_clear_dirty_log` structs, reused (every field is set per call). */
  readonly #dirtyLog = new Uint8Array(KvmStructSize.dirtyLog);
  readonly #dirtyLogView = new DataView(this.#dirtyLog.buffer);
  readonly #clearDirtyLog = new Uint8Array(KvmStructSize.clearDirtyLog);
  readonly #clearDirtyLogView = new DataView(this.#clearDirtyLog.buffer);
  readonly #irqLevelView = new DataView(this.#irqLevel.buffer);

  static {
    construct = (fd, vcpuMmapSize) => new KvmVm(fd, vcpuMmapSize);
  }

  private constructor(fd: OwnedFd, vcpuMmapSize: number) {
    this.#fd = fd;
    this.#vcpuMmapSize = vcpuMmapSize;
  }

  /** The raw descriptor (the object keeps owning it). */
  get unsafeFd(): number {
    return this.#fd.fd;
  }

  /**
   * A second handle on the same VM (`fcntl(F_DUPFD_CLOEXEC)`): the VM lives
   * until every handle and vCPU fd is closed.
   *
   * @returns The new handle, owned by the caller.
   */
  tryClone(): KvmVm {
    return new KvmVm(this.#fd.duplicate(), this.#vcpuMmapSize);
  }

  /**
   * `KVM_CHECK_EXTENSION` on the VM fd.
   *
   * @param cap A {@linkcode KvmCap} value.
   * @returns The capability's value for this VM, 0 when absent.
   */
  checkExtension(cap: number): number {
    return ioctlValue(
      "KVM_CHECK_EXTENSION",
      this.unsafeFd,
      KvmIoctl.KVM_CHECK_EXTENSION,
      BigInt(cap),
    );
  }

  /**
   * `KVM_SET_USER_MEMORY_REGION`: creates, moves, changes or (with
   * `memorySize` 0) deletes a memory slot.
   *
   * A call interrupted by a signal (`EINTR`: KVM did not apply it) is
   * made again.
   *
   * @param region The slot, shaped like the kernel's struct.
   */
  setUserMemoryRegion(region: KvmUserspaceMemoryRegion): void {
    const v = this.#regionView;
    v.setUint32(UserspaceMemoryRegionLayout.slot, region.slot, true);
    v.setUint32(UserspaceMemoryRegionLayout.flags, region.flags, true);
    v.setBigUint64(UserspaceMemoryRegionLayout.guestPhysAddr, region.guestPhysAddr, true);
    v.setBigUint64(UserspaceMemoryRegionLayout.memorySize, region.memorySize, true);
    v.setBigUint64(UserspaceMemoryRegionLayout.userspaceAddr, region.userspaceAddr, true);
    ioctlStruct(
      "KVM_SET_USER_MEMORY_REGION",
      this.unsafeFd,
      KvmIoctl.KVM_SET_USER_MEMORY_REGION,
      this.#region,
      "retry",
    );
  }

  /**
   * `KVM_ENABLE_CAP` on the VM fd.
   *
   * @param cap The kernel's struct: `{ cap, flags, args }` (at most 4 args).
   * @throws {RangeError} for more than 4 args.
   * @throws {SyscallError} `ioctl(KVM_ENABLE_CAP)` (EINVAL for an unknown cap or bad args).
   */
  enableCap(cap: KvmEnableCap): void {
    if (cap.args.length > 4) {
      throw new RangeError(`kvm_enable_cap has 4 args, not ${cap.args.length}`);
    }
    const bytes = new Uint8Array(KvmStructSize.enableCap);
    const v = new DataView(bytes.buffer);
    v.setUint32(EnableCapLayout.cap, cap.cap, true);
    v.setUint32(EnableCapLayout.flags, cap.flags, true);
    cap.args.forEach((arg, i) => v.setBigUint64(EnableCapLayout.args + 8 * i, arg, true));
    ioctlStruct("KVM_ENABLE_CAP", this.unsafeFd, KvmIoctl.KVM_ENABLE_CAP, bytes);
  }

  /**
   * `KVM_GET_DIRTY_LOG`: copies the dirty bitmap of a slot made with
   * `KVM_MEM_LOG_DIRTY_PAGES` into `log.dirtyBitmap`. Without manual
   * protect it also clears the log (and write-protects the pages again);
   * with `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` enabled it only reads.
   *
   * @param log The kernel's struct: `{ slot, dirtyBitmap }`.
   * @throws {SyscallError} `ioctl(KVM_GET_DIRTY_LOG)` (ENOENT for a slot without logging).
   */
  getDirtyLog(log: KvmDirtyLog): void {
    const bytes = this.#dirtyLog;
    const v = this.#dirtyLogView;
    v.setUint32(DirtyLogLayout.slot, log.slot, true);
    v.setBigUint64(DirtyLogLayout.dirtyBitmap, bufferAddress(log.dirtyBitmap), true);
    ioctlStruct("KVM_GET_DIRTY_LOG", this.unsafeFd, KvmIoctl.KVM_GET_DIRTY_LOG, bytes);
  }

  /**
   * `KVM_CLEAR_DIRTY_LOG` (with manual protect enabled): clears the dirty
   * bits set in `log.dirtyBitmap` and write-protects those pages again, so
   * the next guest write to them is logged.
   *
   * @param log The kernel's struct: `{ slot, numPages, firstPage, dirtyBitmap }`.
   * @throws {SyscallError} `ioctl(KVM_CLEAR_DIRTY_LOG)` (EINVAL for a misaligned range).
   */
  clearDirtyLog(log: KvmClearDirtyLog): void {
    const bytes = this.#clearDirtyLog;
    const v = this.#clearDirtyLogView;
    v.setUint32(ClearDirtyLogLayout.slot, log.slot, true);
    v.setUint32(ClearDirtyLogLayout.numPages, log.numPages, true);
    v.setBigUint64(ClearDirtyLogLayout.firstPage, log.firstPage, true);
    v.setBigUint64(ClearDirtyLogLayout.dirtyBitmap, bufferAddress(log.dirtyBitmap), true);
    ioctlStruct("KVM_CLEAR_DIRTY_LOG", this.unsafeFd, KvmIoctl.KVM_CLEAR_DIRTY_LOG, bytes);
  }

  /**
   * `KVM_SET_TSS_ADDR` (x86): where the 3-page real-mode TSS lives.
   *
   * @param address A guest physical address.
   */
  setTssAddr(address: bigint): void {
    ioctlValue("KVM_SET_TSS_ADDR", this.unsafeFd, KvmIoctl.KVM_SET_TSS_ADDR, address);
  }

  /**
   * `KVM_CREATE_IRQCHIP` (x86): an in-kernel PIC pair, IOAPIC and a local
   * APIC per vCPU (create it before the vCPUs). Their registers (ports
   * 0x20/0x21, 0xa0/0xa1, 0x4d0/0x4d1, MMIO 0xfec00000 and 0xfee00000) are
   * then handled by KVM and never exit.
   *
   * @throws {SyscallError} `ioctl(KVM_CREATE_IRQCHIP)` (EEXIST the second time).
   */
  createIrqchip(): void {
    ioctlValue("KVM_CREATE_IRQCHIP", this.unsafeFd, KvmIoctl.KVM_CREATE_IRQCHIP, 0n);
  }

  /**
   * `KVM_CREATE_PIT2` (x86): an in-kernel i8254 (ports 0x40-0x43) driving
   * IRQ 0; needs the irqchip.
   *
   * @param config The kernel's struct: `{ flags }`.
   * @throws {SyscallError} `ioctl(KVM_CREATE_PIT2)` (ENOENT without irqchip, EEXIST the second time).
   */
  createPit2(config: KvmPitConfig): void {
    const bytes = new Uint8Array(KvmStructSize.pitConfig);
    new DataView(bytes.buffer).setUint32(0, config.flags, true);
    ioctlStruct("KVM_CREATE_PIT2", this.unsafeFd, KvmIoctl.KVM_CREATE_PIT2, bytes);
  }

  /**
   * `KVM_IRQ_LINE`: sets the level of an interrupt line of the in-kernel
   * irqchip. Callable from any thread while a vCPU runs.
   *
   * @param line The kernel's struct: `{ irq, level }`.
   * @throws {SyscallError} `ioctl(KVM_IRQ_LINE)` (ENXIO without irqchip).
   */
  irqLine(line: KvmIrqLevel): void {
    this.#irqLevelView.setUint32(0, line.irq, true);
    this.#irqLevelView.setUint32(4, line.level, true);
    ioctlStruct("KVM_IRQ_LINE", this.unsafeFd, KvmIoctl.KVM_IRQ_LINE, this.#irqLevel);
  }

  /**
   * `KVM_CREATE_VCPU`.
   *
   * @param id The vCPU id (0 for the boot processor).
   * @returns vCPU `id`, with its `kvm_run` structure mapped.
   */
  createVcpu(id: number): KvmVcpu {
    const fd = new OwnedFd(
      ioctlValue("KVM_CREATE_VCPU", this.unsafeFd, KvmIoctl.KVM_CREATE_VCPU, BigInt(id)),
    );
    try {
      return openVcpu(fd, this.#vcpuMmapSize, id);
    } catch (err) {
      fd.close();
      throw err;
    }
  }

  /** Closes the VM fd (the VM dies once its vCPU fds are closed too). */
  [Symbol.dispose](): void {
    this.#fd.close();
  }
}
