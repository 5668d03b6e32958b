/**
 * Owned copies of the x86 vCPU register structures `struct kvm_regs` and
 * `struct kvm_sregs`, as passed to `KVM_GET_REGS`/`KVM_SET_REGS` and
 * `KVM_GET_SREGS`/`KVM_SET_SREGS`.
 *
 * @module
 */

import {
  DtableLayout,
  KvmStructSize,
  RegsLayout,
  SegmentLayout,
  SregsLayout,
} from "./kvm_constants.ts";

/**
 * Names of the registers in `struct kvm_regs`.
 *
 * @example
 * ```ts
 * import { KvmRegs } from "../kvm.ts";
 * import type { KvmRegName } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const regs = KvmRegs.realModeReset();
 * const names: KvmRegName[] = ["rip", "rflags", "rdx"];
 * assert.deepEqual(names.map((name) => regs.get(name)), [0xfff0n, 2n, 0x600n]);
 * ```
 */
export type KvmRegName =
  | "rax"
  | "rbx"
  | "rcx"
  | "rdx"
  | "rsi"
  | "rdi"
  | "rsp"
  | "rbp"
  | "r8"
  | "r9"
  | "r10"
  | "r11"
  | "r12"
  | "r13"
  | "r14"
  | "r15"
  | "rip"
  | "rflags";

/**
 * `struct kvm_regs`: the general-purpose registers, `rip` and `rflags`.
 *
 * @example
 * ```ts
 * import { KvmRegs } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const regs = new KvmRegs();
 * regs.set("rip", 0xfff0n);
 * regs.set("rax", -1n); // stored as its 64-bit two's complement
 * assert.deepEqual([regs.get("rip"), regs.get("rax")], [0xfff0n, 0xffff_ffff_ffff_ffffn]);
 * assert.equal(regs.buffer.length, 144);
 * ```
 */
export class KvmRegs {
  /** The raw 144-byte structure. */
  readonly buffer: Uint8Array<ArrayBuffer> = new Uint8Array(KvmStructSize.regs);
  readonly #view = new DataView(this.buffer.buffer);

  /** Reads one register. */
  get(name: KvmRegName): bigint {
    return this.#view.getBigUint64(RegsLayout[name], true);
  }

  /** Writes one register. */
  set(name: KvmRegName, value: bigint): void {
    this.#view.setBigUint64(RegsLayout[name], BigInt.asUintN(64, value), true);
  }

  /**
   * The registers of an x86 processor after RESET or INIT (Intel SDM vol. 3,
   * 9.1.1): all zero but `rip` 0xfff0 (with CS base 0xffff0000, the first
   * instruction is fetched at 0xfffffff0), `rflags` 2 (its reserved bit)
   * and `rdx` 0x600 (a family-6 processor signature).
   *
   * @returns New registers in the reset state.
   * @example
   * ```ts
   * import { KvmRegs } from "../kvm.ts";
   * import assert from "node:assert/strict";
   *
   * const regs = KvmRegs.realModeReset();
   * assert.deepEqual([regs.get("rip"), regs.get("rflags"), regs.get("rsp")], [0xfff0n, 2n, 0n]);
   * ```
   */
  static realModeReset(): KvmRegs {
    const regs = new KvmRegs();
    regs.set("rip", 0xfff0n);
    regs.set("rflags", 2n);
    regs.set("rdx", 0x600n);
    return regs;
  }
}

/**
 * `struct kvm_segment` as a plain object.
 *
 * @example
 * ```ts
 * import { KvmSregs } from "../kvm.ts";
 * import type { KvmSegment } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const flatData: KvmSegment = {
 *   base: 0n, limit: 0xffffffff, selector: 0x10, type: 3, present: 1, dpl: 0,
 *   db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0,
 * };
 * const sregs = new KvmSregs();
 * sregs.setSegment("ds", flatData);
 * assert.deepEqual(sregs.segment("ds"), flatData);
 * ```
 */
export interface KvmSegment {
  /** Segment base. */
  base: bigint;
  /** Segment limit in bytes (already scaled by `g`). */
  limit: number;
  /** Selector. */
  selector: number;
  /** Descriptor type (e.g. 0xb execute/read accessed code, 0x3 read/write accessed data). */
  type: number;
  /** Present bit. */
  present: number;
  /** Descriptor privilege level. */
  dpl: number;
  /** Default operation size (1 = 32-bit). */
  db: number;
  /** Code/data (1) or system (0) descriptor. */
  s: number;
  /** 64-bit code segment. */
  l: number;
  /** Granularity (1 = 4 KiB units). */
  g: number;
  /** Available-for-software bit. */
  avl: number;
  /** Whether the segment is unusable. */
  unusable: number;
}

/**
 * Names of the segments in `struct kvm_sregs`.
 *
 * @example
 * ```ts
 * import { KvmSregs } from "../kvm.ts";
 * import type { KvmSegmentName } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const sregs = new KvmSregs();
 * sregs.setRealModeReset();
 * const names: KvmSegmentName[] = ["cs", "ds"];
 * assert.deepEqual(names.map((name) => sregs.segment(name).selector), [0xf000, 0]);
 * ```
 */
export type KvmSegmentName = "cs" | "ds" | "es" | "fs" | "gs" | "ss" | "tr" | "ldt";
/**
 * Names of the descriptor tables in `struct kvm_sregs`.
 *
 * @example
 * ```ts
 * import { KvmSregs } from "../kvm.ts";
 * import type { KvmDtableName } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const sregs = new KvmSregs();
 * const name: KvmDtableName = "gdt";
 * sregs.setDtable(name, { base: 0x500n, limit: 23 }); // three 8-byte descriptors
 * assert.deepEqual(sregs.dtable(name), { base: 0x500n, limit: 23 });
 * ```
 */
export type KvmDtableName = "gdt" | "idt";
/**
 * Names of the 64-bit control fields in `struct kvm_sregs`.
 *
 * @example
 * ```ts
 * import { KvmSregs } from "../kvm.ts";
 * import type { KvmSregName } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * const sregs = new KvmSregs();
 * sregs.setRealModeReset();
 * const names: KvmSregName[] = ["cr0", "cr4", "efer"];
 * assert.deepEqual(names.map((name) => sregs.get(name)), [0x60000010n, 0n, 0n]);
 * ```
 */
export type KvmSregName = "cr0" | "cr2" | "cr3" | "cr4" | "cr8" | "efer" | "apicBase";

const SEGMENT_BYTES = [
  "type",
  "present",
  "dpl",
  "db",
  "s",
  "l",
  "g",
  "avl",
  "unusable",
] as const;

/**
 * `struct kvm_sregs`: segments, descriptor tables and control registers.
 *
 * @example
 * ```ts
 * import { KvmSystem } from "../kvm.ts";
 * import assert from "node:assert/strict";
 *
 * using kvm = KvmSystem.open();
 * using vm = kvm.createVm();
 * using vcpu = vm.createVcpu(0);
 * const sregs = vcpu.getSregs(); // a new vCPU is in the reset state
 * const cs = sregs.segment("cs");
 * assert.deepEqual([cs.selector, cs.base], [0xf000, 0xffff0000n]);
 * sregs.set("cr0", sregs.get("cr0") | 1n); // CR0.PE
 * vcpu.setSregs(sregs);
 * assert.equal(vcpu.getSregs().get("cr0") & 1n, 1n);
 * ```
 */
export class KvmSregs {
  /** The raw 312-byte structure. */
  readonly buffer: Uint8Array<ArrayBuffer> = new Uint8Array(KvmStructSize.sregs);
  readonly #view = new DataView(this.buffer.buffer);

  /** Reads a control field. */
  get(name: KvmSregName): bigint {
    return this.#view.getBigUint64(SregsLayout[name], true);
  }

  /** Writes a control field. */
  set(name: KvmSregName, value: bigint): void {
    this.#view.setBigUint64(SregsLayout[name], BigInt.asUintN(64, value), true);
  }

  /** Reads one segment. */
  segment(name: KvmSegmentName): KvmSegment {
    const at = SregsLayout[name];
    const v = this.#view;
    const segment: KvmSegment = {
      base: v.getBigUint64(at + SegmentLayout.base, true),
      limit: v.getUint32(at + SegmentLayout.limit, true),
      selector: v.getUint16(at + SegmentLayout.selector, true),
      type: 0,
      present: 0,
      dpl: 0,
      db: 0,
      s: 0,
      l: 0,
      g: 0,
      avl: 0,
      unusable: 0,
    };
    for (const field of SEGMENT_BYTES) segment[field] = v.getUint8(at + SegmentLayout[field]);
    return segment;
  }

  /** Writes one segment. */
  setSegment(name: KvmSegmentName, segment: KvmSegment): void {
    const at = SregsLayout[name];
    const v = this.#view;
    v.setBigUint64(at + SegmentLayout.base, segment.base, true);
    v.setUint32(at + SegmentLayout.limit, segment.limit, true);
    v.setUint16(at + SegmentLayout.selector, segment.selector, true);
    for (const field of SEGMENT_BYTES) v.setUint8(at + SegmentLayout[field], segment[field]);
  }

  /** Reads a descriptor table register. */
  dtable(name: KvmDtableName): { base: bigint; limit: number } {
    const at = SregsLayout[name];
    return {
      base: this.#view.getBigUint64(at + DtableLayout.base, true),
      limit: this.#view.getUint16(at + DtableLayout.limit, true),
    };
  }

  /**
   * Flat 32-bit protected mode without paging: 4 GiB code (selector 0x8)
   * and data (selector 0x10) segments based at 0, `CR0.PE` on, `CR0.PG`,
   * `CR4` and `EFER` off. The other registers are left as they are.
   *
   * @example
   * ```ts
   * import { KvmSregs } from "../kvm.ts";
   * import assert from "node:assert/strict";
   *
   * const sregs = new KvmSregs();
   * sregs.setFlatProtectedMode();
   * assert.equal(sregs.segment("ds").limit, 0xffff_ffff);
   * assert.equal(sregs.get("cr0") & 1n, 1n);
   * ```
   */
  setFlatProtectedMode(): void {
    const data = {
      base: 0n,
      limit: 0xffff_ffff,
      selector: 0x10,
      type: 0x3, // read/write data, accessed
      present: 1,
      dpl: 0,
      db: 1,
      s: 1,
      l: 0,
      g: 1,
      avl: 0,
      unusable: 0,
    };
    this.#setCodeAndData({ ...data, selector: 0x8, type: 0xb }, data); // execute/read code
    this.set("cr0", (this.get("cr0") | 1n) & ~(1n << 31n)); // PE on, PG off
    this.set("cr4", 0n);
    this.set("efer", 0n);
  }

  /** Sets `cs` to `code` and the five data segment registers to `data`. */
  #setCodeAndData(code: KvmSegment, data: KvmSegment): void {
    this.setSegment("cs", code);
    for (const name of ["ds", "es", "fs", "gs", "ss"] as const) this.setSegment(name, data);
  }

  /**
   * Puts the segments, descriptor tables and control registers in the
   * state of an x86 processor after RESET or INIT (Intel SDM vol. 3,
   * 9.1.1): real mode, CS selector 0xf000 with base 0xffff0000, the other
   * data segments at 0 with a 64 KiB limit, GDT and IDT at 0 with limit
   * 0xffff, CR0 0x60000010 (CD, NW, ET), CR2/3/4, CR8 and EFER 0, no
   * pending interrupts. The APIC base is kept (KVM owns it).
   *
   * @example
   * ```ts
   * import { KvmSregs } from "../kvm.ts";
   * import assert from "node:assert/strict";
   *
   * const sregs = new KvmSregs();
   * sregs.setRealModeReset();
   * assert.equal(sregs.segment("cs").base, 0xffff0000n);
   * assert.deepEqual(sregs.dtable("idt"), { base: 0n, limit: 0xffff });
   * ```
   */
  setRealModeReset(): void {
    const data = {
      base: 0n,
      limit: 0xffff,
      selector: 0,
      type: 0x3, // read/write data, accessed
      present: 1,
      dpl: 0,
      db: 0,
      s: 1,
      l: 0,
      g: 0,
      avl: 0,
      unusable: 0,
    };
    this.#setCodeAndData({ ...data, base: 0xffff0000n, selector: 0xf000, type: 0xb }, data);
    this.setSegment("tr", { ...data, type: 0xb, s: 0 }); // busy 32-bit TSS
    this.setSegment("ldt", { ...data, type: 0x2, s: 0 });
    this.setDtable("gdt", { base: 0n, limit: 0xffff });
    this.setDtable("idt", { base: 0n, limit: 0xffff });
    this.set("cr0", 0x60000010n);
    for (const name of ["cr2", "cr3", "cr4", "cr8", "efer"] as const) this.set(name, 0n);
    this.buffer.fill(0, SregsLayout.interruptBitmap, KvmStructSize.sregs);
  }

  /** Writes a descriptor table register. */
  setDtable(name: KvmDtableName, table: { base: bigint; limit: number }): void {
    const at = SregsLayout[name];
    this.#view.setBigUint64(at + DtableLayout.base, table.base, true);
    this.#view.setUint16(at + DtableLayout.limit, table.limit, true);
  }
}
