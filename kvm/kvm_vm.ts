import { KvmIoctl, KvmStructSize, UserspaceMemoryRegionLayout } from "./kvm_constants.ts";
import { KvmVcpu } from "./kvm_vcpu.ts";
import { libc } from "../ffi/_libc.ts";
import { OwnedFd } from "../ffi/_owned_fd.ts";
import { check } from "../ffi/syscall_error.ts";

/**
 * A KVM VM fd: one method per VM ioctl. Every failure throws a
 * {@linkcode SyscallError} named after the ioctl
 * (`ioctl(KVM_SET_USER_MEMORY_REGION)`).
 *
 * @example
 * ```ts ignore
 * import { KvmSystem } from "./kvm_system.ts";
 * using kvm = KvmSystem.open();
 * using vm = kvm.createVm();
 * vm.setUserMemoryRegion(0, 0, 0n, 4096n, hostAddress);
 * using vcpu = vm.createVcpu(0);
 * ```
 */
export class KvmVm implements Disposable {
  readonly #fd: OwnedFd;
  readonly #vcpuMmapSize: number;
  readonly #region = new Uint8Array(KvmStructSize.userspaceMemoryRegion);
  readonly #regionView = new DataView(this.#region.buffer);

  /** Takes ownership of a VM fd; `vcpuMmapSize` is `KVM_GET_VCPU_MMAP_SIZE`. */
  constructor(fd: OwnedFd, vcpuMmapSize: number) {
    this.#fd = fd;
    this.#vcpuMmapSize = vcpuMmapSize;
  }

  /** The raw descriptor. */
  get fd(): number {
    return this.#fd.fd;
  }

  /**
   * A second handle on the same VM (`fcntl(F_DUPFD_CLOEXEC)`): the VM lives
   * until every handle and vCPU fd is closed.
   */
  tryClone(): KvmVm {
    return new KvmVm(this.#fd.duplicate(), this.#vcpuMmapSize);
  }

  /** `KVM_CHECK_EXTENSION` on the VM fd: a capability's value for this VM, 0 when absent. */
  checkExtension(cap: number): number {
    return check(
      "ioctl(KVM_CHECK_EXTENSION)",
      libc().ioctl_int(this.fd, KvmIoctl.KVM_CHECK_EXTENSION, BigInt(cap)),
    );
  }

  /**
   * `KVM_SET_USER_MEMORY_REGION`: creates, moves, changes or (with `size`
   * 0) deletes memory slot `slot`, backed by the host range at `hostAddress`.
   */
  setUserMemoryRegion(
    slot: number,
    flags: number,
    gpa: bigint,
    size: bigint,
    hostAddress: bigint,
  ): void {
    const v = this.#regionView;
    v.setUint32(UserspaceMemoryRegionLayout.slot, slot, true);
    v.setUint32(UserspaceMemoryRegionLayout.flags, flags, true);
    v.setBigUint64(UserspaceMemoryRegionLayout.guestPhysAddr, gpa, true);
    v.setBigUint64(UserspaceMemoryRegionLayout.memorySize, size, true);
    v.setBigUint64(UserspaceMemoryRegionLayout.userspaceAddr, hostAddress, true);
    check(
      "ioctl(KVM_SET_USER_MEMORY_REGION)",
      libc().ioctl(this.fd, KvmIoctl.KVM_SET_USER_MEMORY_REGION, this.#region),
    );
  }

  /** `KVM_SET_TSS_ADDR` (x86): where the 3-page real-mode TSS lives in guest physical memory. */
  setTssAddr(address: bigint): void {
    check("ioctl(KVM_SET_TSS_ADDR)", libc().ioctl_int(this.fd, KvmIoctl.KVM_SET_TSS_ADDR, address));
  }

  /** `KVM_CREATE_VCPU`: vCPU `id`, with its `kvm_run` structure mapped. */
  createVcpu(id: number): KvmVcpu {
    const fd = new OwnedFd(
      check(
        "ioctl(KVM_CREATE_VCPU)",
        libc().ioctl_int(this.fd, KvmIoctl.KVM_CREATE_VCPU, BigInt(id)),
      ),
    );
    try {
      return new KvmVcpu(fd, this.#vcpuMmapSize);
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
