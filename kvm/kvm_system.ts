import { Fcntl } from "../ffi/_constants.ts";
import { Errno } from "../ffi/_errno.ts";
import { KVM_API_VERSION, KvmIoctl } from "./kvm_constants.ts";
import { KvmVm } from "./kvm_vm.ts";
import { libc } from "../ffi/_libc.ts";
import { OwnedFd } from "../ffi/_owned_fd.ts";
import { check, lastError } from "../ffi/syscall_error.ts";

/**
 * The KVM system fd (`/dev/kvm`): one method per system ioctl. Every failure
 * throws a {@linkcode SyscallError} named after the ioctl
 * (`ioctl(KVM_CREATE_VM)`).
 *
 * @example
 * ```ts ignore
 * import { KvmSystem } from "./kvm_system.ts";
 * using kvm = KvmSystem.open();
 * console.log(kvm.apiVersion()); // 12
 * using vm = kvm.createVm();
 * ```
 */
export class KvmSystem implements Disposable {
  readonly #fd: OwnedFd;

  private constructor(fd: OwnedFd) {
    this.#fd = fd;
  }

  /**
   * Opens `path` (default `/dev/kvm`) read-write and checks that the API
   * version is 12.
   */
  static open(path = "/dev/kvm"): KvmSystem {
    const system = new KvmSystem(OwnedFd.open(path, Fcntl.O_RDWR));
    try {
      const version = system.apiVersion();
      if (version !== KVM_API_VERSION) {
        throw new Error(`unsupported kvm api version ${version} (expected ${KVM_API_VERSION})`);
      }
    } catch (err) {
      system[Symbol.dispose]();
      throw err;
    }
    return system;
  }

  /** The raw descriptor. */
  get fd(): number {
    return this.#fd.fd;
  }

  /** `KVM_GET_API_VERSION`: the KVM API version (always 12). */
  apiVersion(): number {
    return check(
      "ioctl(KVM_GET_API_VERSION)",
      libc().ioctl_int(this.fd, KvmIoctl.KVM_GET_API_VERSION, 0n),
    );
  }

  /** `KVM_CHECK_EXTENSION` on the system fd: a capability's value, 0 when absent. */
  checkExtension(cap: number): number {
    return check(
      "ioctl(KVM_CHECK_EXTENSION)",
      libc().ioctl_int(this.fd, KvmIoctl.KVM_CHECK_EXTENSION, BigInt(cap)),
    );
  }

  /** `KVM_GET_VCPU_MMAP_SIZE`: the size of each vCPU's `kvm_run` mapping. */
  vcpuMmapSize(): number {
    return check(
      "ioctl(KVM_GET_VCPU_MMAP_SIZE)",
      libc().ioctl_int(this.fd, KvmIoctl.KVM_GET_VCPU_MMAP_SIZE, 0n),
    );
  }

  /**
   * `KVM_CREATE_VM` (default machine type 0): a new, empty VM. Retried while
   * it fails with `EINTR` (a signal such as a profiler's SIGPROF arrived
   * during the call).
   */
  createVm(): KvmVm {
    for (;;) {
      const fd = libc().ioctl_int(this.fd, KvmIoctl.KVM_CREATE_VM, 0n);
      if (fd >= 0) return new KvmVm(new OwnedFd(fd), this.vcpuMmapSize());
      const error = lastError("ioctl(KVM_CREATE_VM)");
      if (error.errno !== Errno.EINTR) throw error;
    }
  }

  /** Closes `/dev/kvm` (VMs created from it stay valid). */
  [Symbol.dispose](): void {
    this.#fd.close();
  }
}
