import { DisposedError } from "../diagnostics/disposed_error.ts";
import { hex } from "../layout/_hex.ts";
import { HostMapping } from "../ffi/_host_mapping.ts";
import { KvmExit, kvmExitName } from "../kvm/kvm_constants.ts";
import { KvmRegs } from "../kvm/kvm_regs.ts";
import { KvmVcpu } from "../kvm/kvm_vcpu.ts";
import { SyscallError } from "../ffi/syscall_error.ts";
import { PAGE_SIZE } from "../layout/memory_range.ts";
import type { KvmPartition } from "../kvm/kvm_partition.ts";

/**
 * Width of a guest access in bytes.
 *
 * @example
 * ```ts
 * import type { ProbeSize } from "./guest_probe.ts";
 * import assert from "node:assert/strict";
 * const size: ProbeSize = 4;
 * assert.equal(size, 4);
 * ```
 */
export type ProbeSize = 1 | 2 | 4;

/**
 * What one guest access did.
 *
 * @example
 * ```ts
 * import type { ProbeResult } from "./guest_probe.ts";
 * import assert from "node:assert/strict";
 * const show = (r: ProbeResult) => r.kind === "value" ? `read ${r.value}` : r.kind;
 * assert.equal(show({ kind: "value", value: 7 }), "read 7");
 * ```
 */
export type ProbeResult =
  /** A load completed from RAM; `value` is what the guest read (zero-extended). */
  | { readonly kind: "value"; readonly value: number }
  /** A store completed into RAM. */
  | { readonly kind: "done" }
  /**
   * The access left the guest as an MMIO exit: no slot at `gpa`, or a write
   * to a read-only slot. `data` holds the written bytes (stores) or is empty
   * (loads). Memory was not changed; the exit has been completed (loads get
   * all-ones).
   */
  | {
    readonly kind: "mmio";
    readonly gpa: bigint;
    readonly isWrite: boolean;
    readonly size: number;
    readonly data: Uint8Array;
  }
  /**
   * The address is inside a slot whose host pages cannot be faulted in (or
   * a store hit host pages that are not writable): `KVM_RUN` failed with
   * EFAULT, exited with `KVM_EXIT_MEMORY_FAULT`, or (where KVM emulates the
   * access, e.g. shadow paging without TDP) exited as MMIO at an address
   * inside a slot, which is not MMIO. `gpa` is given when known.
   */
  | { readonly kind: "memory_fault"; readonly gpa?: bigint }
  /** Any other exit (`KVM_EXIT_SHUTDOWN`, `KVM_EXIT_INTERNAL_ERROR`, ...). */
  | { readonly kind: "exit"; readonly reason: number; readonly name: string };

/**
 * Options of {@linkcode GuestProbe.create}.
 *
 * @example
 * ```ts
 * import type { GuestProbeOptions } from "./guest_probe.ts";
 * import assert from "node:assert/strict";
 * const options: GuestProbeOptions = { codeGpa: 0xfffff000n };
 * assert.equal(options.codeGpa, 0xfffff000n);
 * ```
 */
export interface GuestProbeOptions {
  /**
   * Guest physical address of the probe's one code page (default
   * `0xfffff000`, the top of the 32-bit space, inside the usual MMIO gap).
   * It becomes a read-only slot of its own; keep it clear of what you test.
   */
  readonly codeGpa?: bigint;
  /** Where `KVM_SET_TSS_ADDR` puts the 3-page real-mode TSS (default `0xfffbd000`). */
  readonly tssAddress?: bigint;
  /** Which vCPU of the partition runs the probe (default 0); two probes need two code pages. */
  readonly vcpuId?: number;
}

const LIMIT_4G = 1n << 32n;
const MMIO_READ_FILL = 0xff;

// 32-bit code stubs (operand address in EBX, value in EAX), each ending in HLT.
const STUBS = {
  load1: { offset: 0x00, code: [0x0f, 0xb6, 0x03, 0xf4] }, // movzx eax, byte [ebx]; hlt
  load2: { offset: 0x10, code: [0x0f, 0xb7, 0x03, 0xf4] }, // movzx eax, word [ebx]; hlt
  load4: { offset: 0x20, code: [0x8b, 0x03, 0xf4] }, // mov eax, [ebx]; hlt
  store1: { offset: 0x30, code: [0x88, 0x03, 0xf4] }, // mov [ebx], al; hlt
  store2: { offset: 0x40, code: [0x66, 0x89, 0x03, 0xf4] }, // mov [ebx], ax; hlt
  store4: { offset: 0x50, code: [0x89, 0x03, 0xf4] }, // mov [ebx], eax; hlt
} as const;

const SHARE_KIND = "membacking.GuestProbe";

/**
 * A tiny guest that performs one memory access at a time, to see guest
 * physical memory exactly as the guest does: one vCPU in 32-bit flat
 * protected mode without paging and without firmware, running stubs such as
 * `mov eax, [ebx]; hlt` from a code page the probe owns.
 *
 * Addresses must be below 4 GiB (the guest runs 32-bit code without paging)
 * and the access must not cross 4 GiB. The probe uses
 * {@linkcode KvmPartition.vcpu} and one slot for its code page; dispose it
 * before the partition.
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, MemoryLayout, MemoryRange, Vtl } from "../mod.ts";
 * import { KvmPartition } from "../kvm.ts";
 * import { GuestProbe } from "../testing.ts";
 * import assert from "node:assert/strict";
 *
 * using manager = new GuestMemoryBuilder().build(
 *   MemoryLayout.fromGaps(16n << 20n, [new MemoryRange(0xe0000000n, 0x100000000n)]),
 * );
 * using partition = KvmPartition.create();
 * using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
 * using probe = GuestProbe.create(partition);
 * assert.deepEqual(probe.store(0x1000n, 4, 0xdeadbeef), { kind: "done" });
 * assert.deepEqual(probe.load(0x1000n, 4), { kind: "value", value: 0xdeadbeef });
 * assert.equal(manager.client().guestMemory().readU32(0x1000n), 0xdeadbeef);
 * assert.equal(probe.load(0xe0000000n, 4).kind, "mmio");
 * ```
 */
export class GuestProbe implements Disposable {
  /** The partition (on the thread that created the probe; `undefined` in a Worker). */
  readonly #partition: KvmPartition | undefined;
  /** The code page (owned by the creating thread). */
  readonly #code: HostMapping | undefined;
  readonly #vcpu: KvmVcpu;
  /** Guest physical address of the code page. */
  readonly codeGpa: bigint;
  #needsSetup = true;
  #disposed = false;

  private constructor(
    partition: KvmPartition | undefined,
    code: HostMapping | undefined,
    codeGpa: bigint,
    vcpu: KvmVcpu,
  ) {
    this.#partition = partition;
    this.#code = code;
    this.codeGpa = codeGpa;
    this.#vcpu = vcpu;
  }

  /**
   * This probe as a plain object for `postMessage`: a Worker turns it into a
   * probe of its own ({@linkcode GuestProbe.fromShare}) that drives the same
   * vCPU and code page. This side must outlive the Worker's probe.
   *
   * @returns The object to post.
   */
  share(): {
    readonly kind: "membacking.GuestProbe";
    readonly vcpu: ReturnType<KvmVcpu["share"]>;
    readonly codeGpa: bigint;
  } {
    if (this.#disposed) throw new DisposedError({ object: "guest probe" });
    return { kind: SHARE_KIND, vcpu: this.#vcpu.share(), codeGpa: this.codeGpa };
  }

  /**
   * A probe in a Worker from what {@linkcode share} returned. It has no view
   * of the slot table, so an MMIO exit inside a slot (how this nested host
   * reports unbacked host pages) is reported as `mmio`, not `memory_fault`.
   *
   * @param share What `share()` returned, as `postMessage` delivered it.
   * @returns The probe; disposing of it only unmaps its view of the vCPU.
   * @throws {TypeError} when `share` is not such an object.
   */
  static fromShare(share: unknown): GuestProbe {
    const s = share as Record<string, unknown> | null;
    if (
      typeof s !== "object" || s === null || s.kind !== SHARE_KIND || typeof s.codeGpa !== "bigint"
    ) {
      throw new TypeError("not a shared guest probe (from GuestProbe.share())");
    }
    return new GuestProbe(undefined, undefined, s.codeGpa, KvmVcpu.fromShare(s.vcpu));
  }

  /** Creates the probe's code page slot and sets up vCPU `options.vcpuId` (default 0) of `partition`. */
  static create(partition: KvmPartition, options: GuestProbeOptions = {}): GuestProbe {
    const codeGpa = options.codeGpa ?? 0xfffff000n;
    if (codeGpa % PAGE_SIZE !== 0n || codeGpa + PAGE_SIZE > LIMIT_4G) {
      throw new RangeError(
        `probe code page ${hex(codeGpa)} must be page aligned and below 4 GiB`,
      );
    }
    try {
      partition.unsafeVm.setTssAddr(options.tssAddress ?? 0xfffbd000n);
    } catch (err) {
      // A second probe on the same VM: the TSS is already placed.
      if (!(err instanceof SyscallError && err.code === "EEXIST")) throw err;
    }
    const code = HostMapping.anonymous(PAGE_SIZE, true);
    try {
      const bytes = code.bytes();
      bytes.fill(0xf4); // hlt everywhere else
      for (const stub of Object.values(STUBS)) bytes.set(stub.code, stub.offset);
      partition.mapRange(code.address, PAGE_SIZE, codeGpa, false, true);
      try {
        return new GuestProbe(partition, code, codeGpa, partition.vcpu(options.vcpuId ?? 0));
      } catch (err) {
        partition.unmapRange(codeGpa, PAGE_SIZE);
        throw err;
      }
    } catch (err) {
      code.unmap();
      throw err;
    }
  }

  /** The guest loads `size` bytes at `gpa`. */
  load(gpa: bigint, size: ProbeSize): ProbeResult {
    return this.#access(gpa, size, false, 0);
  }

  /** The guest stores the low `size` bytes of `value` at `gpa` (little-endian). */
  store(gpa: bigint, size: ProbeSize, value: number): ProbeResult {
    return this.#access(gpa, size, true, value);
  }

  #access(gpa: bigint, size: ProbeSize, isStore: boolean, value: number): ProbeResult {
    if (this.#disposed) throw new DisposedError({ object: "guest probe" });
    if (size !== 1 && size !== 2 && size !== 4) {
      throw new RangeError(`probe access size must be 1, 2 or 4, not ${size}`);
    }
    if (gpa < 0n || gpa + BigInt(size) > LIMIT_4G) {
      throw new RangeError(
        `guest probe address ${hex(gpa)} (+${size}) is not below 4 GiB`,
      );
    }
    if (this.#needsSetup) this.#setup();
    const stub = STUBS[`${isStore ? "store" : "load"}${size}`];
    const regs = new KvmRegs();
    regs.set("rip", this.codeGpa + BigInt(stub.offset));
    regs.set("rflags", 2n);
    regs.set("rbx", gpa);
    regs.set("rax", BigInt(value >>> 0));
    this.#vcpu.setRegs(regs);

    let reason: number;
    try {
      reason = this.#vcpu.run();
    } catch (err) {
      if (err instanceof SyscallError && err.code === "EFAULT") {
        if (this.#vcpu.exitReason === KvmExit.KVM_EXIT_MEMORY_FAULT) {
          return { kind: "memory_fault", gpa: this.#vcpu.memoryFaultExit().gpa };
        }
        return { kind: "memory_fault" };
      }
      this.#needsSetup = true;
      throw err;
    }
    switch (reason) {
      case KvmExit.KVM_EXIT_HLT:
        if (isStore) return { kind: "done" };
        return { kind: "value", value: Number(this.#vcpu.getRegs().get("rax") & 0xffff_ffffn) };
      case KvmExit.KVM_EXIT_MMIO: {
        const mmio = this.#vcpu.mmioExit();
        if (!mmio.isWrite) this.#vcpu.setMmioData(new Uint8Array(8).fill(MMIO_READ_FILL));
        this.#vcpu.completePendingIo();
        // Inside a slot, only a write to a read-only slot is real MMIO. Where
        // KVM emulates the access (shadow paging, no TDP), host pages it
        // cannot fault in come back as MMIO instead of EFAULT.
        const slot = this.#partition?.slotAt(mmio.physAddr);
        if (slot !== undefined && !(mmio.isWrite && slot.readonly)) {
          return { kind: "memory_fault", gpa: mmio.physAddr };
        }
        return {
          kind: "mmio",
          gpa: mmio.physAddr,
          isWrite: mmio.isWrite,
          size: mmio.len,
          data: mmio.isWrite ? mmio.data : new Uint8Array(0),
        };
      }
      case KvmExit.KVM_EXIT_MEMORY_FAULT:
        return { kind: "memory_fault", gpa: this.#vcpu.memoryFaultExit().gpa };
      default:
        this.#needsSetup = true;
        return { kind: "exit", reason, name: kvmExitName(reason) };
    }
  }

  /** Flat 32-bit protected mode: CR0.PE, 4 GiB code and data segments, no paging. */
  #setup(): void {
    const sregs = this.#vcpu.getSregs();
    sregs.setFlatProtectedMode();
    this.#vcpu.setSregs(sregs);
    this.#needsSetup = false;
  }

  /** Removes the code page slot and unmaps the code page; idempotent. */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    const partition = this.#partition;
    if (partition === undefined) {
      this.#vcpu[Symbol.dispose](); // a borrowed vCPU: only its kvm_run view goes
      return;
    }
    try {
      if (!partition.isDisposed) partition.unmapRange(this.codeGpa, PAGE_SIZE);
    } finally {
      this.#code?.unmap();
    }
  }
}
