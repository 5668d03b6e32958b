import assert from "node:assert/strict";
import {
  kickVcpu,
  KVM_PIT_SPEAKER_DUMMY,
  KvmExit,
  kvmExitName,
  KvmIoDirection,
  KvmRegs,
  KvmSregs,
  KvmSystem,
} from "../kvm.ts";
import { SyscallError } from "../mod.ts";
import { HostMapping } from "../ffi/_host_mapping.ts";
import { KvmIoctl, KvmRunLayout, KvmStructSize } from "../kvm/kvm_constants.ts";
import { openFdCount, skipWithoutKvm } from "./support/requirements.ts";

Deno.test("kvm constants: irqchip, PIT, CPUID, MSR and port I/O layouts", () => {
  assert.equal(KvmIoctl.KVM_CREATE_IRQCHIP, 0xae60n);
  assert.equal(KvmIoctl.KVM_IRQ_LINE, 0x4008ae61n);
  assert.equal(KvmIoctl.KVM_CREATE_PIT2, 0x4040ae77n);
  assert.equal(KvmIoctl.KVM_GET_SUPPORTED_CPUID, 0xc008ae05n);
  assert.equal(KvmIoctl.KVM_SET_CPUID2, 0x4008ae90n);
  assert.equal(KvmIoctl.KVM_GET_MSRS, 0xc008ae88n);
  assert.equal(KvmIoctl.KVM_SET_MSRS, 0x4008ae89n);
  assert.equal(KvmStructSize.cpuidEntry2, 40);
  assert.equal(KvmStructSize.msrEntry, 16);
  assert.deepEqual(
    [KvmRunLayout.ioDirection, KvmRunLayout.ioSize, KvmRunLayout.ioPort, KvmRunLayout.ioCount],
    [32, 33, 34, 36],
  );
  assert.equal(KvmRunLayout.ioDataOffset, 40);
  assert.equal(KvmRunLayout.internalNdata, 36);
  assert.equal(KvmIoDirection.KVM_EXIT_IO_OUT, 1);
  assert.equal(KVM_PIT_SPEAKER_DUMMY, 1);
});

Deno.test("kvm registers: the real-mode reset state", () => {
  const regs = KvmRegs.realModeReset();
  assert.deepEqual([regs.get("rip"), regs.get("rflags"), regs.get("rdx")], [0xfff0n, 2n, 0x600n]);
  const sregs = new KvmSregs();
  sregs.set("cr4", 0x20n);
  sregs.setRealModeReset();
  assert.deepEqual(sregs.segment("cs"), {
    base: 0xffff0000n,
    limit: 0xffff,
    selector: 0xf000,
    type: 0xb,
    present: 1,
    dpl: 0,
    db: 0,
    s: 1,
    l: 0,
    g: 0,
    avl: 0,
    unusable: 0,
  });
  assert.equal(sregs.segment("ss").base, 0n);
  assert.equal(sregs.segment("ds").limit, 0xffff);
  assert.deepEqual(sregs.dtable("idt"), { base: 0n, limit: 0xffff });
  assert.deepEqual([sregs.get("cr0"), sregs.get("cr4"), sregs.get("efer")], [0x60000010n, 0n, 0n]);
});

// At the reset vector (0xfffffff0), real mode:
//   mov al, 0x41; mov dx, 0x402; out dx, al; in al, dx; mov bx, ax; rep outsb (cx = 2, from ds:si); hlt
const RESET_CODE = [
  0xb0,
  0x41, // mov al, 0x41
  0xba,
  0x02,
  0x04, // mov dx, 0x402
  0xee, // out dx, al
  0xec, // in al, dx
  0x89,
  0xc3, // mov bx, ax
  0xb9,
  0x02,
  0x00, // mov cx, 2
  0xf3,
  0x6e, // rep outsb
  0xf4, // hlt
];

Deno.test({
  name: "kvm vcpu: port I/O exits from a real-mode guest at the reset vector",
  ignore: skipWithoutKvm(),
  fn() {
    const fdsBefore = openFdCount();
    {
      using kvm = KvmSystem.open();
      using vm = kvm.createVm();
      using code = HostMapping.anonymous(0x1000n, true);
      code.bytes().set(RESET_CODE, 0xff0);
      using low = HostMapping.anonymous(0x1000n, true);
      low.bytes().set([0x68, 0x69], 0);
      vm.setUserMemoryRegion({
        slot: 0,
        flags: 0,
        guestPhysAddr: 0xfffff000n,
        memorySize: 0x1000n,
        userspaceAddr: code.address,
      });
      vm.setUserMemoryRegion({
        slot: 1,
        flags: 0,
        guestPhysAddr: 0n,
        memorySize: 0x1000n,
        userspaceAddr: low.address,
      });
      using vcpu = vm.createVcpu(0);
      vcpu.setCpuid2(kvm.getSupportedCpuid());
      const sregs = vcpu.getSregs();
      sregs.setRealModeReset();
      vcpu.setSregs(sregs);
      vcpu.setRegs(KvmRegs.realModeReset());

      assert.equal(vcpu.run(), KvmExit.KVM_EXIT_IO);
      const out = vcpu.ioExit();
      assert.deepEqual({ ...out, dataOffset: 0 }, {
        direction: "out",
        size: 1,
        port: 0x402,
        count: 1,
        dataOffset: 0,
      });
      assert.ok(out.dataOffset >= 32);
      assert.deepEqual([...vcpu.ioData()], [0x41]);

      assert.equal(vcpu.run(), KvmExit.KVM_EXIT_IO);
      assert.deepEqual(
        { ...vcpu.ioExit(), dataOffset: 0 },
        { direction: "in", size: 1, port: 0x402, count: 1, dataOffset: 0 },
      );
      vcpu.ioData()[0] = 0xe9;

      // rep outsb of "hi" from 0:0: one exit, or one per byte where KVM emulates it.
      const written: number[] = [];
      let reason: number;
      while ((reason = vcpu.run()) === KvmExit.KVM_EXIT_IO) {
        const rep = vcpu.ioExit();
        assert.equal(rep.direction, "out");
        assert.equal(rep.port, 0x402);
        written.push(...vcpu.ioData());
      }
      assert.equal(kvmExitName(reason), "KVM_EXIT_HLT");
      assert.deepEqual(written, [0x68, 0x69]);
      assert.equal(vcpu.getRegs().get("rbx") & 0xffn, 0xe9n);

      // A kick from the token, as a Worker would: the next run stops at once.
      kickVcpu(vcpu.kickHandle());
      assert.equal(vcpu.immediateExit, true);
      assert.equal(vcpu.run(), KvmExit.KVM_EXIT_INTR);
      vcpu.kick();
      assert.equal(vcpu.run(), KvmExit.KVM_EXIT_INTR);
      vcpu.immediateExit = false;
      assert.equal(kvmExitName(vcpu.exitReason), "KVM_EXIT_INTR");
      assert.deepEqual(vcpu.internalErrorExit().data.length <= 16, true);
    }
    assert.equal(openFdCount(), fdsBefore);
  },
});

Deno.test({
  name: "kvm vm: irqchip, PIT, IRQ lines; vcpu: CPUID and MSRs",
  ignore: skipWithoutKvm(),
  fn() {
    using kvm = KvmSystem.open();
    using vm = kvm.createVm();
    vm.createIrqchip();
    assert.throws(() => vm.createIrqchip(), (err: unknown) => {
      assert.ok(err instanceof SyscallError);
      assert.equal(err.syscall, "ioctl(KVM_CREATE_IRQCHIP)");
      assert.equal(err.code, "EEXIST");
      return true;
    });
    vm.createPit2({ flags: KVM_PIT_SPEAKER_DUMMY });
    vm.irqLine({ irq: 4, level: 1 });
    vm.irqLine({ irq: 4, level: 0 });

    const leaves = kvm.getSupportedCpuid(1); // E2BIG at first: the wrapper grows the buffer
    const leaf0 = leaves.find((e) => e.function === 0);
    assert.ok(leaf0 !== undefined && leaf0.eax >= 1);
    using vcpu = vm.createVcpu(0);
    vcpu.setCpuid2(leaves);
    assert.equal(vcpu.setMsrs([{ index: 0x1a0, data: 1n }]), 1); // IA32_MISC_ENABLE
    assert.deepEqual(vcpu.getMsrs([0x1a0]), [{ index: 0x1a0, data: 1n }]);
    assert.equal(vcpu.getSregs().segment("cs").selector, 0xf000);
  },
});

Deno.test({
  name: "kvm vcpu: a Worker kicks a vCPU looping on port I/O while this thread runs it",
  ignore: skipWithoutKvm(),
  async fn() {
    using kvm = KvmSystem.open();
    using vm = kvm.createVm();
    using code = HostMapping.anonymous(0x1000n, true);
    code.bytes().set([0xe6, 0x80, 0xeb, 0xfc], 0xff0); // 1: out 0x80, al; jmp 1b
    vm.setUserMemoryRegion({
      slot: 0,
      flags: 0,
      guestPhysAddr: 0xfffff000n,
      memorySize: 0x1000n,
      userspaceAddr: code.address,
    });
    using vcpu = vm.createVcpu(0);
    const worker = new Worker(new URL("./support/kick_worker.ts", import.meta.url), {
      type: "module",
    });
    try {
      const kicked = new Promise((resolve) => worker.onmessage = resolve);
      worker.postMessage({ kick: vcpu.kickHandle(), afterMs: 50 });
      // Blocks this thread: only the Worker can stop the loop.
      const started = performance.now();
      let ioExits = 0;
      let reason: number;
      while ((reason = vcpu.run()) === KvmExit.KVM_EXIT_IO) {
        ioExits++;
        if (performance.now() - started > 20_000) break;
      }
      assert.equal(kvmExitName(reason), "KVM_EXIT_INTR");
      assert.ok(ioExits > 0);
      assert.equal(vcpu.immediateExit, true);
      await kicked;
    } finally {
      worker.terminate();
    }
  },
});
