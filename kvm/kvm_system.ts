import { Fcntl } from "../ffi/_constants.ts";
import { ioctlStruct, ioctlValue } from "../ffi/_ioctl.ts";
import { OwnedFd } from "../ffi/_owned_fd.ts";
import { SyscallError } from "../ffi/syscall_error.ts";
import { decodeCpuid2, encodeCpuid2, type KvmCpuidEntry2 } from "./kvm_cpuid.ts";
import { KVM_API_VERSION, KvmIoctl } from "./kvm_constants.ts";
import { KvmPartitionError } from "./kvm_partition_error.ts";
import { type KvmVm, openVm } from "./kvm_vm.ts";

/**
 * The KVM system fd (`/dev/kvm`): one method per system ioctl. Every failure
 * throws a {@linkcode SyscallError} named after the ioctl
 * (`ioctl(KVM_CREATE_VM)`).
 *
 * @example
 * ```ts
 * import { KvmCap, KvmSystem } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * using kvm = KvmSystem.open();
 * assert.equal(kvm.apiVersion(), 12);
 * assert.equal(kvm.checkExtension(KvmCap.KVM_CAP_READONLY_MEM), 1);
 * using vm = kvm.createVm();
 * using vcpu = vm.createVcpu(0);
 * assert.equal(vcpu.id, 0);
 * ```
 */
export class KvmSystem implements Disposable {
  readonly #fd: OwnedFd;

  private constructor(fd: OwnedFd) {
    this.#fd = fd;
  }

  /**
   * Opens `path` (default `/dev/kvm`) read-write and checks that the API
   * version is 12 (else {@linkcode KvmPartitionError} `unsupportedApiVersion`).
   *
   * @param path The KVM device.
   * @returns The open system fd.
   * @throws {SyscallError} `open` when the device cannot be opened.
   */
  static open(path = "/dev/kvm"): KvmSystem {
    const system = new KvmSystem(OwnedFd.open(path, Fcntl.O_RDWR));
    try {
      const version = system.apiVersion();
      if (version !== KVM_API_VERSION) {
        throw new KvmPartitionError({ kind: "unsupportedApiVersion", version });
      }
    } catch (err) {
      system[Symbol.dispose]();
      throw err;
    }
    return system;
  }

  /** The raw descriptor (the object keeps owning it). */
  get unsafeFd(): number {
    return this.#fd.fd;
  }

  /**
   * `KVM_GET_API_VERSION`.
   *
   * @returns The KVM API version (always 12).
   */
  apiVersion(): number {
    return ioctlValue("KVM_GET_API_VERSION", this.unsafeFd, KvmIoctl.KVM_GET_API_VERSION, 0n);
  }

  /**
   * `KVM_CHECK_EXTENSION` on the system fd.
   *
   * @param cap A {@linkcode KvmCap} value.
   * @returns The capability's value, 0 when absent.
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
   * `KVM_GET_VCPU_MMAP_SIZE`.
   *
   * @returns The size of each vCPU's `kvm_run` mapping.
   */
  vcpuMmapSize(): number {
    return ioctlValue("KVM_GET_VCPU_MMAP_SIZE", this.unsafeFd, KvmIoctl.KVM_GET_VCPU_MMAP_SIZE, 0n);
  }

  /**
   * `KVM_GET_SUPPORTED_CPUID`: the CPUID leaves KVM can present to a guest
   * on this host (pass them, possibly edited, to
   * {@linkcode KvmVcpu.setCpuid2}). Starts with room for `capacity` entries
   * and doubles it while the kernel answers E2BIG.
   *
   * @param capacity Initial number of entries to make room for (default 128).
   * @returns The entries, in the kernel's order.
   * @throws {SyscallError} `ioctl(KVM_GET_SUPPORTED_CPUID)` for any other failure.
   *
   * @example
   * ```ts
   * import { KvmSystem } from "../kvm.ts";
   * import assert from "node:assert/strict";
   *
   * using kvm = KvmSystem.open();
   * const kvmLeaf = kvm.getSupportedCpuid().find((e) => e.function === 0x4000_0000);
   * assert.ok(kvmLeaf !== undefined);
   * const { ebx, ecx, edx } = kvmLeaf;
   * assert.equal(new TextDecoder().decode(new Uint32Array([ebx, ecx, edx])), "KVMKVMKVM\0\0\0");
   * ```
   */
  getSupportedCpuid(capacity = 128): KvmCpuidEntry2[] {
    for (let room = capacity;; room *= 2) {
      const bytes = encodeCpuid2([], room);
      try {
        ioctlStruct(
          "KVM_GET_SUPPORTED_CPUID",
          this.unsafeFd,
          KvmIoctl.KVM_GET_SUPPORTED_CPUID,
          bytes,
          "retry",
        );
      } catch (err) {
        if (err instanceof SyscallError && err.code === "E2BIG" && room < 1 << 16) continue;
        throw err;
      }
      return decodeCpuid2(bytes);
    }
  }

  /**
   * `KVM_CREATE_VM` (default machine type 0), retried while it fails with
   * `EINTR` (a signal such as a profiler's SIGPROF arrived during the call).
   *
   * @returns A new, empty VM.
   */
  createVm(): KvmVm {
    const fd = ioctlValue("KVM_CREATE_VM", this.unsafeFd, KvmIoctl.KVM_CREATE_VM, 0n, "retry");
    return openVm(new OwnedFd(fd), this.vcpuMmapSize());
  }

  /** Closes `/dev/kvm` (VMs created from it stay valid). */
  [Symbol.dispose](): void {
    this.#fd.close();
  }
}
