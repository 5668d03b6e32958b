import { Mman } from "../ffi/_constants.ts";
import { HostMapping } from "../ffi/_host_mapping.ts";
import { ioctlStruct, ioctlValue } from "../ffi/_ioctl.ts";
import type { OwnedFd } from "../ffi/_owned_fd.ts";
import { SyscallError } from "../ffi/syscall_error.ts";
import { DisposedError } from "../diagnostics/disposed_error.ts";
import {
  KvmExit,
  KvmIoctl,
  KvmIoDirection,
  KvmRunLayout,
  KvmStructSize,
  PreFaultMemoryLayout,
} from "./kvm_constants.ts";
import { KvmRegs, KvmSregs } from "./kvm_regs.ts";
import { encodeCpuid2, type KvmCpuidEntry2 } from "./kvm_cpuid.ts";
import { decodeMsrs, encodeMsrs, type KvmMsrEntry } from "./kvm_msrs.ts";
import type { KvmVcpuKick } from "./kvm_vcpu_kick.ts";

let construct: (fd: OwnedFd | number, mmapSize: number, id: number) => KvmVcpu;

/** Wraps a vCPU fd (owned) and maps its `kvm_run` (for `KvmVm.createVcpu`). */
export function openVcpu(fd: OwnedFd, mmapSize: number, id: number): KvmVcpu {
  return construct(fd, mmapSize, id);
}

const SHARE_KIND = "membacking.KvmVcpu";

/**
 * The `mmio` member of `kvm_run` after a `KVM_EXIT_MMIO`.
 *
 * @example
 * ```ts
 * import type { KvmMmioExit } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const exit: KvmMmioExit = {
 *   physAddr: 0xe0000000n, len: 4, isWrite: true, data: new Uint8Array([0xef, 0xbe, 0xad, 0xde]),
 * };
 * assert.equal(new DataView(exit.data.buffer).getUint32(0, true), 0xdeadbeef);
 * ```
 */
export interface KvmMmioExit {
  /** Guest physical address of the access. */
  physAddr: bigint;
  /** Access width in bytes (1 to 8). */
  len: number;
  /** Whether the guest wrote. */
  isWrite: boolean;
  /** The written bytes (`len` of them); for reads, what is currently in the buffer. */
  data: Uint8Array;
}

/**
 * The `memory_fault` member of `kvm_run` after a `KVM_EXIT_MEMORY_FAULT`.
 *
 * @example
 * ```ts
 * import type { KvmMemoryFaultExit } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const fault: KvmMemoryFaultExit = { flags: 0n, gpa: 0x300000n, size: 0x1000n };
 * assert.equal(fault.gpa + fault.size, 0x301000n);
 * ```
 */
export interface KvmMemoryFaultExit {
  /** `KVM_MEMORY_EXIT_FLAG_*` bits. */
  flags: bigint;
  /** First guest physical address of the faulting range. */
  gpa: bigint;
  /** Size of the faulting range. */
  size: bigint;
}

/**
 * The `io` member of `kvm_run` after a `KVM_EXIT_IO`: a port access of
 * `count` elements of `size` bytes (count > 1 for `rep ins`/`rep outs`),
 * whose data lies in the run area at `dataOffset`
 * ({@linkcode KvmVcpu.ioData}).
 *
 * @example
 * ```ts
 * import type { KvmIoExit } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * // `rep outsw` of 3 words to port 0x402:
 * const exit: KvmIoExit = { direction: "out", size: 2, port: 0x402, count: 3, dataOffset: 4096 };
 * assert.equal(exit.size * exit.count, 6); // data bytes
 * ```
 */
export interface KvmIoExit {
  /** `__u8 direction`: `in` (the VMM fills the data) or `out` (the guest wrote it). */
  readonly direction: "in" | "out";
  /** `__u8 size`: bytes per element, 1, 2 or 4. */
  readonly size: number;
  /** `__u16 port`. */
  readonly port: number;
  /** `__u32 count`: elements. */
  readonly count: number;
  /** `__u64 data_offset`: where the `size * count` data bytes start, from the start of `kvm_run`. */
  readonly dataOffset: number;
}

/**
 * The `internal` member of `kvm_run` after `KVM_EXIT_INTERNAL_ERROR`.
 *
 * @example
 * ```ts
 * import { KvmInternalError } from "../kvm.ts";
 * import type { KvmInternalErrorExit } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const exit: KvmInternalErrorExit = { suberror: 1, ndata: 0, data: [] };
 * assert.equal(exit.suberror, KvmInternalError.KVM_INTERNAL_ERROR_EMULATION);
 * ```
 */
export interface KvmInternalErrorExit {
  /** `__u32 suberror`: a {@linkcode KvmInternalError} value. */
  readonly suberror: number;
  /** `__u32 ndata`: how many `data` words KVM filled (0 without `KVM_CAP_INTERNAL_ERROR_INFO`). */
  readonly ndata: number;
  /** `__u64 data[ndata]` (at most 16): suberror-specific (e.g. the instruction bytes, the exit reason). */
  readonly data: readonly bigint[];
}

/**
 * A KVM vCPU fd and its mapped `kvm_run` structure: one method per vCPU
 * ioctl. Every failure throws a {@linkcode SyscallError} named after the
 * ioctl (`ioctl(KVM_RUN)`); `KVM_RUN` failing with EFAULT is how KVM reports
 * a guest access to a slot whose host memory cannot be faulted in.
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, MemoryLayout, Vtl } from "../mod.ts";
 * import { KvmExit, KvmPartition, KvmRegs } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(2n << 20n, []));
 * using partition = KvmPartition.create();
 * using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
 * // mov al, 0x42; out 0x10, al; hlt
 * manager.client().guestMemory().write(0x1000n, new Uint8Array([0xb0, 0x42, 0xe6, 0x10, 0xf4]));
 * const vcpu = partition.vcpu(); // owned by the partition
 * const sregs = vcpu.getSregs();
 * sregs.setFlatProtectedMode();
 * vcpu.setSregs(sregs);
 * const regs = new KvmRegs();
 * regs.set("rip", 0x1000n);
 * regs.set("rflags", 2n);
 * vcpu.setRegs(regs);
 * assert.equal(vcpu.run(), KvmExit.KVM_EXIT_IO);
 * const io = vcpu.ioExit();
 * assert.deepEqual([io.direction, io.size, io.port, io.count], ["out", 1, 0x10, 1]);
 * assert.deepEqual(vcpu.ioData(), new Uint8Array([0x42]));
 * assert.equal(vcpu.run(), KvmExit.KVM_EXIT_HLT);
 * assert.equal(vcpu.getRegs().get("rip"), 0x1005n);
 * ```
 */
export class KvmVcpu implements Disposable {
  /** The owned fd; `undefined` when borrowed from another thread's vCPU. */
  readonly #fd: OwnedFd | undefined;
  readonly #rawFd: number;
  readonly #mmapSize: number;
  /** The vCPU id given to `KVM_CREATE_VCPU`. */
  readonly id: number;
  readonly #runArea: HostMapping;
  readonly #run: DataView;
  readonly #runBytes: Uint8Array;
  readonly #preFault = new Uint8Array(KvmStructSize.preFaultMemory);
  readonly #preFaultView = new DataView(this.#preFault.buffer);

  static {
    construct = (fd, mmapSize, id) => new KvmVcpu(fd, mmapSize, id);
  }

  private constructor(fd: OwnedFd | number, mmapSize: number, id: number) {
    const raw = typeof fd === "number" ? fd : fd.fd;
    this.#runArea = HostMapping.shared(raw, 0n, BigInt(mmapSize), Mman.PROT_READ | Mman.PROT_WRITE);
    this.#fd = typeof fd === "number" ? undefined : fd;
    this.#rawFd = raw;
    this.#mmapSize = mmapSize;
    this.id = id;
    this.#runBytes = this.#runArea.bytes();
    this.#run = new DataView(
      this.#runBytes.buffer,
      this.#runBytes.byteOffset,
      this.#runBytes.byteLength,
    );
  }

  /** The raw descriptor (the object keeps owning it). */
  get unsafeFd(): number {
    this.#live();
    return this.#rawFd;
  }

  /**
   * This vCPU as a plain object for `postMessage`, so that a Worker can run
   * it ({@linkcode KvmVcpu.fromShare}). The vCPU stays owned here: the
   * Worker's object only borrows the descriptor, and this side must outlive
   * it. Run a vCPU from one thread at a time (KVM serializes the ioctls of
   * one vCPU, and each switch of thread costs a reload).
   *
   * @returns The object to post.
   */
  share(): {
    readonly kind: "membacking.KvmVcpu";
    readonly fd: number;
    readonly mmapSize: number;
    readonly id: number;
  } {
    return { kind: SHARE_KIND, fd: this.unsafeFd, mmapSize: this.#mmapSize, id: this.id };
  }

  /**
   * The vCPU another thread shared ({@linkcode share}), with its own view of
   * `kvm_run`. Disposing of it unmaps that view; the descriptor stays open.
   *
   * @param share What `share()` returned, as `postMessage` delivered it.
   * @returns A borrowed vCPU.
   * @throws {TypeError} when `share` is not such an object.
   */
  static fromShare(share: unknown): KvmVcpu {
    const s = share as Record<string, unknown> | null;
    if (
      typeof s !== "object" || s === null || s.kind !== SHARE_KIND || typeof s.fd !== "number" ||
      typeof s.mmapSize !== "number" || typeof s.id !== "number"
    ) {
      throw new TypeError("not a shared kvm vcpu (from KvmVcpu.share())");
    }
    return new KvmVcpu(s.fd, s.mmapSize, s.id);
  }

  #live(): DataView {
    if (!this.#runArea.isMapped) throw new DisposedError({ object: "kvm vcpu" });
    return this.#run;
  }

  /**
   * `KVM_RUN`: runs the guest until it exits to userspace.
   *
   * A run cut short by a signal or by `immediate_exit` (the ioctl fails
   * with EINTR) is an exit like any other: it returns
   * `KvmExit.KVM_EXIT_INTR`, and a pending I/O exit has been completed.
   *
   * @returns `kvm_run.exit_reason`, a {@linkcode KvmExit} value.
   * @throws {SyscallError} `ioctl(KVM_RUN)`, e.g. with EFAULT when the host
   *   memory behind a slot cannot be faulted in (then
   *   {@linkcode KvmVcpu.memoryFaultExit} may say which range).
   */
  run(): number {
    const run = this.#live();
    run.setUint32(KvmRunLayout.exitReason, KvmExit.KVM_EXIT_UNKNOWN, true);
    try {
      ioctlValue("KVM_RUN", this.unsafeFd, KvmIoctl.KVM_RUN, 0n);
    } catch (err) {
      if (!(err instanceof SyscallError && err.code === "EINTR")) throw err;
      run.setUint32(KvmRunLayout.exitReason, KvmExit.KVM_EXIT_INTR, true);
      return KvmExit.KVM_EXIT_INTR;
    }
    return run.getUint32(KvmRunLayout.exitReason, true);
  }

  /**
   * Asks the vCPU to stop: sets `kvm_run.immediate_exit`, so that the next
   * (or current, if it has not entered the guest yet) `KVM_RUN` returns
   * `KVM_EXIT_INTR` at once. The VMM clears the flag
   * ({@linkcode KvmVcpu.immediateExit} `= false`) when it wants the vCPU
   * to run again. From another thread, use {@linkcode KvmVcpu.kickHandle}.
   */
  kick(): void {
    this.#live().setUint8(KvmRunLayout.immediateExit, 1);
  }

  /**
   * A token another thread (a `Worker`) can use to kick this vCPU with
   * `kickVcpu`, while this thread is blocked in {@linkcode KvmVcpu.run}.
   *
   * The model: `kvm_run` is memory shared between the VMM and KVM, and a
   * kick is a one-byte store of 1 to its `immediate_exit`, which is safe
   * from any thread. KVM reads the byte when `KVM_RUN` starts, so a kicked
   * vCPU stops at its next exit to the VMM (port or MMIO access, HLT
   * without irqchip, ...) at the latest: the VMM's loop sees
   * `KVM_EXIT_INTR` instead of re-entering the guest. A guest that never
   * exits to the VMM (spinning, or halted on an in-kernel irqchip) is only
   * interrupted by a signal sent to the running thread, which this library
   * does not send. The token holds the host address of `kvm_run` as a
   * plain bigint (it survives `postMessage`) and must not be used after the
   * vCPU is disposed.
   *
   * @returns The token.
   */
  kickHandle(): KvmVcpuKick {
    this.#live();
    return { runAddress: this.#runArea.address };
  }

  /** `kvm_run.exit_reason` of the last `KVM_RUN`. */
  get exitReason(): number {
    return this.#live().getUint32(KvmRunLayout.exitReason, true);
  }

  /** `kvm_run.immediate_exit`. */
  get immediateExit(): boolean {
    return this.#live().getUint8(KvmRunLayout.immediateExit) !== 0;
  }

  /** Sets `kvm_run.immediate_exit`: while set, `KVM_RUN` only completes pending I/O and returns EINTR. */
  set immediateExit(value: boolean) {
    this.#live().setUint8(KvmRunLayout.immediateExit, value ? 1 : 0);
  }

  /**
   * Completes a pending MMIO or port I/O exit without running the guest:
   * sets `immediate_exit`, runs `KVM_RUN` (expecting EINTR) and clears it.
   */
  completePendingIo(): void {
    this.immediateExit = true;
    try {
      this.run(); // KVM_EXIT_INTR
    } finally {
      this.immediateExit = false;
    }
  }

  /**
   * The `io` member after a `KVM_EXIT_IO`.
   *
   * @returns The decoded access; its data is {@linkcode KvmVcpu.ioData}.
   */
  ioExit(): KvmIoExit {
    const run = this.#live();
    return {
      direction: run.getUint8(KvmRunLayout.ioDirection) === KvmIoDirection.KVM_EXIT_IO_OUT
        ? "out"
        : "in",
      size: run.getUint8(KvmRunLayout.ioSize),
      port: run.getUint16(KvmRunLayout.ioPort, true),
      count: run.getUint32(KvmRunLayout.ioCount, true),
      dataOffset: Number(run.getBigUint64(KvmRunLayout.ioDataOffset, true)),
    };
  }

  /**
   * The data area of the pending `KVM_EXIT_IO`: `size * count` bytes inside
   * the run area, live (not a copy). After an `out` it holds what the guest
   * wrote; for an `in`, write the value there before the next `KVM_RUN`.
   * Valid until the next `KVM_RUN`.
   *
   * @returns A view of the data bytes.
   * @throws {RangeError} when the exit's data area lies outside the run area
   *   (there is no pending I/O exit).
   */
  ioData(): Uint8Array {
    const exit = this.ioExit();
    const end = exit.dataOffset + exit.size * exit.count;
    if (exit.dataOffset < KvmRunLayout.exitUnion || end > this.#runBytes.length) {
      throw new RangeError(`no port I/O data in the run area (offset ${exit.dataOffset})`);
    }
    return this.#runBytes.subarray(exit.dataOffset, end);
  }

  /**
   * The `internal` member after `KVM_EXIT_INTERNAL_ERROR`.
   *
   * @returns The suberror and the data words KVM filled.
   */
  internalErrorExit(): KvmInternalErrorExit {
    const run = this.#live();
    const ndata = run.getUint32(KvmRunLayout.internalNdata, true);
    const data: bigint[] = [];
    for (let i = 0; i < Math.min(ndata, KvmRunLayout.internalDataMax); i++) {
      data.push(run.getBigUint64(KvmRunLayout.internalData + 8 * i, true));
    }
    return { suberror: run.getUint32(KvmRunLayout.internalSuberror, true), ndata, data };
  }

  /**
   * `KVM_SET_CPUID2`: what the CPUID instruction returns in the guest
   * (typically `KvmSystem.getSupportedCpuid()`, possibly edited). Call
   * before the first `KVM_RUN`.
   *
   * @param entries The leaves.
   * @throws {SyscallError} `ioctl(KVM_SET_CPUID2)`.
   */
  setCpuid2(entries: readonly KvmCpuidEntry2[]): void {
    ioctlStruct("KVM_SET_CPUID2", this.unsafeFd, KvmIoctl.KVM_SET_CPUID2, encodeCpuid2(entries));
  }

  /**
   * `KVM_SET_MSRS`: writes model-specific registers. KVM stops at the first
   * MSR it refuses.
   *
   * @param entries The MSRs and their values.
   * @returns How many were written (from the first, in order).
   * @throws {SyscallError} `ioctl(KVM_SET_MSRS)`.
   */
  setMsrs(entries: readonly KvmMsrEntry[]): number {
    return ioctlStruct("KVM_SET_MSRS", this.unsafeFd, KvmIoctl.KVM_SET_MSRS, encodeMsrs(entries));
  }

  /**
   * `KVM_GET_MSRS`: reads model-specific registers.
   *
   * @param indices MSR numbers.
   * @returns The MSRs KVM read (from the first, in order; it stops at one it refuses).
   * @throws {SyscallError} `ioctl(KVM_GET_MSRS)`.
   */
  getMsrs(indices: readonly number[]): KvmMsrEntry[] {
    const bytes = encodeMsrs(indices.map((index) => ({ index, data: 0n })));
    const count = ioctlStruct("KVM_GET_MSRS", this.unsafeFd, KvmIoctl.KVM_GET_MSRS, bytes);
    return decodeMsrs(bytes, count);
  }

  /** The `mmio` member after a `KVM_EXIT_MMIO` (data copied out). */
  mmioExit(): KvmMmioExit {
    const run = this.#live();
    const len = run.getUint32(KvmRunLayout.mmioLen, true);
    const start = KvmRunLayout.mmioData;
    return {
      physAddr: run.getBigUint64(KvmRunLayout.mmioPhysAddr, true),
      len,
      isWrite: run.getUint8(KvmRunLayout.mmioIsWrite) !== 0,
      data: this.#runBytes.slice(start, start + Math.min(len, 8)),
    };
  }

  /** Fills `kvm_run.mmio.data` with the value a pending MMIO read returns. */
  setMmioData(data: Uint8Array): void {
    if (data.length > 8) throw new RangeError("mmio data is at most 8 bytes");
    this.#live();
    this.#runBytes.set(data, KvmRunLayout.mmioData);
  }

  /** The `memory_fault` member after `KVM_EXIT_MEMORY_FAULT` (or an EFAULT that filled it). */
  memoryFaultExit(): KvmMemoryFaultExit {
    const run = this.#live();
    return {
      flags: run.getBigUint64(KvmRunLayout.memoryFaultFlags, true),
      gpa: run.getBigUint64(KvmRunLayout.memoryFaultGpa, true),
      size: run.getBigUint64(KvmRunLayout.memoryFaultSize, true),
    };
  }

  /** `KVM_GET_REGS`. */
  getRegs(): KvmRegs {
    const regs = new KvmRegs();
    ioctlStruct("KVM_GET_REGS", this.unsafeFd, KvmIoctl.KVM_GET_REGS, regs.buffer);
    return regs;
  }

  /** `KVM_SET_REGS`. */
  setRegs(regs: KvmRegs): void {
    ioctlStruct("KVM_SET_REGS", this.unsafeFd, KvmIoctl.KVM_SET_REGS, regs.buffer);
  }

  /** `KVM_GET_SREGS`. */
  getSregs(): KvmSregs {
    const sregs = new KvmSregs();
    ioctlStruct("KVM_GET_SREGS", this.unsafeFd, KvmIoctl.KVM_GET_SREGS, sregs.buffer);
    return sregs;
  }

  /** `KVM_SET_SREGS`. */
  setSregs(sregs: KvmSregs): void {
    ioctlStruct("KVM_SET_SREGS", this.unsafeFd, KvmIoctl.KVM_SET_SREGS, sregs.buffer);
  }

  /**
   * `KVM_PRE_FAULT_MEMORY` over `[gpa, gpa + size)`: populates the stage-2
   * page tables as if the guest had touched the range. KVM may stop early
   * (EINTR, EAGAIN, or a short return); this loops until the whole range is
   * done. Throws `ioctl(KVM_PRE_FAULT_MEMORY)` for other errors (ENOENT
   * where no slot is, EOPNOTSUPP without two-dimensional paging).
   */
  preFaultMemory(gpa: bigint, size: bigint): void {
    const v = this.#preFaultView;
    this.#preFault.fill(0);
    v.setBigUint64(PreFaultMemoryLayout.gpa, gpa, true);
    v.setBigUint64(PreFaultMemoryLayout.size, size, true);
    while (v.getBigUint64(PreFaultMemoryLayout.size, true) > 0n) {
      try {
        ioctlStruct(
          "KVM_PRE_FAULT_MEMORY",
          this.unsafeFd,
          KvmIoctl.KVM_PRE_FAULT_MEMORY,
          this.#preFault,
          "retry",
        );
      } catch (err) {
        if (err instanceof SyscallError && err.code === "EAGAIN") continue;
        throw err;
      }
    }
  }

  /** Unmaps `kvm_run` and closes the vCPU fd; idempotent. */
  [Symbol.dispose](): void {
    this.#runArea.unmap();
    this.#fd?.close();
  }
}
