/**
 * A minimal PC on membacking: enough of an i440FX/PIIX3 machine for
 * SeaBIOS to run its POST, shadow itself with PAM, run option ROMs, boot,
 * fail to find a disk and reboot. Uses only the public entry points.
 *
 * @module
 */

import {
  GuestMemoryBuilder,
  type GuestMemoryManager,
  MemoryLayout,
  MemoryRange,
  type PartitionAttachment,
  Vtl,
} from "../mod.ts";
import {
  KVM_PIT_SPEAKER_DUMMY,
  KvmExit,
  kvmExitName,
  KvmPartition,
  KvmRegs,
  type KvmVcpu,
} from "../kvm.ts";
import { BiosRom, I440fxPam, type PamChange } from "../x86.ts";
import { Cmos, CMOS_DATA_PORT, CMOS_INDEX_PORT } from "./cmos.ts";
import { DEBUG_PORT, DebugPort } from "./debug_port.ts";
import { FW_CFG_DATA_PORT, FW_CFG_SELECTOR_PORT, FwCfg } from "./fw_cfg.ts";
import { I440fxHostBridge, type PamWrite } from "./i440fx_host_bridge.ts";
import { PCI_CONFIG_ADDRESS, PciBus, PciConfigSpace } from "./pci_bus.ts";
import { PcMachineError } from "./pc_machine_error.ts";
import type { PortDevice } from "./port_device.ts";
import { COM1_BASE, Uart16550 } from "./uart_16550.ts";

/** Something that happened in the machine, in order. */
export type PcEvent =
  /** A host bridge config write touched the PAM registers. */
  | ({ readonly kind: "pam"; readonly boot: number } & PamWrite)
  /** A line of debug port (0x402) output. */
  | { readonly kind: "debug"; readonly boot: number; readonly text: string }
  /** A line of COM1 output. */
  | { readonly kind: "serial"; readonly boot: number; readonly text: string }
  /** The machine was reset (0xcf9 or a triple fault); PAM closed again. */
  | {
    readonly kind: "reset";
    readonly boot: number;
    readonly how: "0xcf9" | "shutdown";
    readonly changes: readonly PamChange[];
  }
  /** A guest write that went nowhere (to ROM, or where nothing is mapped). */
  | {
    readonly kind: "droppedWrite";
    readonly boot: number;
    readonly gpa: bigint;
    readonly data: Uint8Array;
  };

/** Options of {@linkcode PcMachine.create}. */
export interface PcMachineOptions {
  /** The BIOS image (e.g. `/usr/share/seabios/bios.bin`). */
  readonly bios: Uint8Array;
  /** Guest RAM (default 128 MiB, at most 3.5 GiB: all of it below the PCI hole). */
  readonly memorySize?: bigint;
  /** Option ROMs, offered as fw_cfg files `genroms/{name}`. */
  readonly optionRoms?: readonly { readonly name: string; readonly image: Uint8Array }[];
  /** `etc/boot-fail-wait` in milliseconds: how long SeaBIOS waits before rebooting (default 0). */
  readonly bootFailWaitMs?: number;
  /** Called with every event as it happens (they are also kept in `events`). */
  readonly onEvent?: (event: PcEvent) => void;
}

/** Why {@linkcode PcMachine.run} returned. */
export interface PcRunResult {
  /** `until` when the predicate held, `timeout` when time ran out. */
  readonly reason: "until" | "timeout";
  /** Exits handled by this call. */
  readonly exits: number;
  /** Milliseconds spent. */
  readonly milliseconds: number;
}

const MIB = 1n << 20n;
const PCI_HOLE = new MemoryRange(0xe0000000n, 0x100000000n);
const TSS_ADDRESS = 0xfeffd000n;
const IA32_MISC_ENABLE = 0x1a0;

/**
 * One vCPU, RAM below the PCI hole at 0xe0000000, the BIOS below 4 GiB and
 * aliased at 0xe0000, the in-kernel PIC/IOAPIC/LAPIC and PIT, and on the
 * port bus: fw_cfg (0x510/0x511), CMOS (0x70/0x71), PCI config (0xcf8,
 * 0xcfc) with the i440FX host bridge at 00:00.0 and a PIIX3 ISA bridge at
 * 00:01.0, the reset control register (0xcf9), the debug port (0x402) and
 * a 16550 at 0x3f8. Other ports read as all ones and ignore writes; MMIO
 * reads where nothing is mapped return all ones, and writes there or to
 * ROM are dropped (and reported as `droppedWrite` events).
 *
 * A reset (0xcf9 with bit 2 set, or a triple fault) is warm: RAM keeps its
 * contents, the PCI functions go back to their power-on values (so PAM
 * closes and the ROM shows at 0xe0000-0x100000 again), and the vCPU goes
 * back to the reset vector. The in-kernel PIC, IOAPIC, LAPIC and PIT are
 * left as they are; SeaBIOS programs them again.
 *
 * @example
 * ```ts ignore
 * import { PcMachine } from "./pc_machine.ts";
 * using machine = PcMachine.create({ bios: Deno.readFileSync("/usr/share/seabios/bios.bin") });
 * machine.run((e) => e.kind === "debug" && e.text.startsWith("No bootable device"));
 * console.log(machine.debugOutput); // SeaBIOS (version 1.16.2-debian-1.16.2-1) ...
 * ```
 */
export class PcMachine implements Disposable {
  /** The guest memory manager (x86 legacy layout). */
  readonly manager: GuestMemoryManager;
  /** The KVM VM. */
  readonly partition: KvmPartition;
  /** The BIOS image in guest memory. */
  readonly rom: BiosRom;
  /** The PAM decoder of the host bridge. */
  readonly pam: I440fxPam;
  /** Everything that happened, in order. */
  readonly events: PcEvent[] = [];
  #boot = 1;
  readonly #attachment: PartitionAttachment;
  readonly #vcpu: KvmVcpu;
  readonly #ports = new Map<number, PortDevice>();
  readonly #debug: DebugPort;
  readonly #serial: Uart16550;
  readonly #pci: PciBus;
  readonly #fwCfg: FwCfg;
  readonly #bridge: I440fxHostBridge;
  readonly #onEvent: ((event: PcEvent) => void) | undefined;
  #resetPending: "0xcf9" | "shutdown" | undefined;
  #disposed = false;

  private constructor(
    manager: GuestMemoryManager,
    partition: KvmPartition,
    attachment: PartitionAttachment,
    rom: BiosRom,
    options: PcMachineOptions,
  ) {
    this.manager = manager;
    this.partition = partition;
    this.#attachment = attachment;
    this.rom = rom;
    this.#onEvent = options.onEvent;
    const memorySize = options.memorySize ?? 128n * MIB;
    this.pam = I440fxPam.create(manager.ramVisibilityControl());

    this.#debug = new DebugPort((text) => this.#emit({ kind: "debug", boot: this.boot, text }));
    this.#serial = new Uart16550(
      COM1_BASE,
      (text) => this.#emit({ kind: "serial", boot: this.boot, text }),
    );
    this.#fwCfg = new FwCfg(memorySize);
    const wait = new Uint8Array(4);
    new DataView(wait.buffer).setUint32(0, options.bootFailWaitMs ?? 0, true);
    this.#fwCfg.addFile("etc/boot-fail-wait", wait);
    for (const rom of options.optionRoms ?? []) {
      this.#fwCfg.addFile(`genroms/${rom.name}`, rom.image);
    }
    const cmos = new Cmos(memorySize, 0n);
    this.#pci = new PciBus(() => this.#resetPending = "0xcf9");
    this.#bridge = new I440fxHostBridge(
      this.pam,
      (write) => this.#emit({ kind: "pam", boot: this.boot, ...write }),
    );
    this.#pci.add(0, 0, this.#bridge);
    this.#pci.add(1, 0, new PciConfigSpace(0x8086, 0x7000, 0x060100, 0x00));

    this.#port(DEBUG_PORT, this.#debug);
    for (let p = 0; p < 8; p++) this.#port(COM1_BASE + p, this.#serial);
    this.#port(FW_CFG_SELECTOR_PORT, this.#fwCfg);
    this.#port(FW_CFG_DATA_PORT, this.#fwCfg);
    this.#port(CMOS_INDEX_PORT, cmos);
    this.#port(CMOS_DATA_PORT, cmos);
    // 0xcf8-0xcff: the config address, the reset control register (0xcf9) and the data ports.
    for (let p = 0; p < 8; p++) this.#port(PCI_CONFIG_ADDRESS + p, this.#pci);

    this.#vcpu = partition.vcpu(0);
    this.#vcpu.setCpuid2(partition.unsafeSystem.getSupportedCpuid());
    this.#vcpu.setMsrs([{ index: IA32_MISC_ENABLE, data: 1n }]); // fast strings
    this.#resetVcpu();
  }

  /**
   * Builds the machine, powered on at the reset vector.
   *
   * @param options BIOS, RAM size, option ROMs.
   * @returns The machine; dispose it to release every fd, mapping and slot.
   * @throws {SyscallError} or {@linkcode KvmPartitionError} when KVM refuses.
   */
  static create(options: PcMachineOptions): PcMachine {
    const memorySize = options.memorySize ?? 128n * MIB;
    if (memorySize < 2n * MIB || memorySize > PCI_HOLE.start) {
      throw new RangeError(`memory size ${memorySize} is not between 2 MiB and 3.5 GiB`);
    }
    using stack = new DisposableStack();
    const layout = MemoryLayout.fromGaps(memorySize, [PCI_HOLE]);
    const manager = stack.use(new GuestMemoryBuilder().x86LegacySupport(true).build(layout));
    const partition = stack.use(KvmPartition.create());
    const vm = partition.unsafeVm;
    vm.setTssAddr(TSS_ADDRESS);
    vm.createIrqchip();
    vm.createPit2({ flags: KVM_PIT_SPEAKER_DUMMY });
    const attachment = stack.use(manager.attachPartition(Vtl.Vtl0, partition));
    const rom = stack.use(BiosRom.map(manager, options.bios, { name: "bios" }));
    const machine = new PcMachine(manager, partition, attachment, rom, options);
    stack.move();
    return machine;
  }

  /** The boot count: 1 for the first boot, incremented by every reset. */
  get boot(): number {
    return this.#boot;
  }

  /** Everything written to the debug port. */
  get debugOutput(): string {
    return this.#debug.output;
  }

  /** Everything written to COM1. */
  get serialOutput(): string {
    return this.#serial.output;
  }

  /** The fw_cfg file names. */
  get fwCfgFiles(): string[] {
    return this.#fwCfg.fileNames;
  }

  /**
   * Runs the vCPU until `until` holds for an event, or `timeoutMs` passes
   * (checked at each exit to the VMM).
   *
   * @param until Called with each new event.
   * @param timeoutMs Wall-clock limit (default 30 000).
   * @returns Why it stopped, with the exit count and time.
   * @throws {PcMachineError} on an exit the machine cannot handle.
   */
  run(until: (event: PcEvent) => boolean, timeoutMs = 30_000): PcRunResult {
    const started = performance.now();
    const deadline = started + timeoutMs;
    let exits = 0;
    let done = false;
    let seen = this.events.length;
    while (!done) {
      const reason = this.#vcpu.run();
      exits++;
      this.#handle(reason);
      if (this.#resetPending !== undefined) this.#reset(this.#resetPending);
      while (seen < this.events.length) {
        if (until(this.events[seen++])) done = true;
      }
      if (!done && (exits & 255) === 0 && performance.now() > deadline) {
        return { reason: "timeout", exits, milliseconds: performance.now() - started };
      }
    }
    return { reason: "until", exits, milliseconds: performance.now() - started };
  }

  #handle(reason: number): void {
    const vcpu = this.#vcpu;
    switch (reason) {
      case KvmExit.KVM_EXIT_IO: {
        const io = vcpu.ioExit();
        const data = vcpu.ioData();
        const device = this.#ports.get(io.port);
        for (let i = 0; i < io.count; i++) {
          const at = i * io.size;
          if (io.direction === "out") {
            let value = 0;
            for (let b = 0; b < io.size; b++) value |= data[at + b] << (8 * b);
            device?.write(io.port, io.size, value >>> 0);
          } else {
            const value = device === undefined ? 0xffffffff : device.read(io.port, io.size);
            for (let b = 0; b < io.size; b++) data[at + b] = (value >>> (8 * b)) & 0xff;
          }
        }
        return;
      }
      case KvmExit.KVM_EXIT_MMIO: {
        const mmio = vcpu.mmioExit();
        if (mmio.isWrite) {
          this.#emit({
            kind: "droppedWrite",
            boot: this.boot,
            gpa: mmio.physAddr,
            data: mmio.data,
          });
        } else {
          vcpu.setMmioData(new Uint8Array(8).fill(0xff));
        }
        return;
      }
      case KvmExit.KVM_EXIT_INTR:
      case KvmExit.KVM_EXIT_HLT:
        return;
      case KvmExit.KVM_EXIT_SHUTDOWN:
        this.#resetPending = "shutdown";
        return;
      case KvmExit.KVM_EXIT_INTERNAL_ERROR: {
        const internal = vcpu.internalErrorExit();
        throw new PcMachineError({
          kind: "internalError",
          suberror: internal.suberror,
          data: internal.data,
          cs: vcpu.getSregs().segment("cs").selector,
          rip: vcpu.getRegs().get("rip"),
        });
      }
      default:
        throw new PcMachineError({ kind: "unexpectedExit", name: kvmExitName(reason) });
    }
  }

  /** A warm reset: PCI functions (PAM closed), fw_cfg, UART and the vCPU back to power-on state. */
  #reset(how: "0xcf9" | "shutdown"): void {
    this.#resetPending = undefined;
    this.#vcpu.completePendingIo();
    this.#pci.reset();
    this.#fwCfg.reset();
    this.#serial.reset();
    this.#boot++;
    this.#resetVcpu();
    this.#emit({ kind: "reset", boot: this.boot, how, changes: this.#bridge.lastResetChanges });
  }

  #resetVcpu(): void {
    const sregs = this.#vcpu.getSregs();
    sregs.setRealModeReset();
    this.#vcpu.setSregs(sregs);
    this.#vcpu.setRegs(KvmRegs.realModeReset());
  }

  #port(port: number, device: PortDevice): void {
    this.#ports.set(port, device);
  }

  #emit(event: PcEvent): void {
    this.events.push(event);
    this.#onEvent?.(event);
  }

  /** Takes the ROM out, detaches and closes the VM, releases guest memory; idempotent. */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    using stack = new DisposableStack();
    stack.use(this.manager);
    stack.use(this.partition);
    stack.use(this.#attachment);
    stack.use(this.rom);
  }
}
