import assert from "node:assert/strict";
import { KvmCap, KvmExit, kvmExitName, KvmIoctl, KvmRunLayout } from "../kvm/kvm_constants.ts";
import { KvmRegs, KvmSregs } from "../kvm/kvm_regs.ts";
import { KvmSystem } from "../kvm/kvm_system.ts";
import { SyscallError } from "../ffi/syscall_error.ts";
import { openFdCount, skipWithoutKvm } from "./support/requirements.ts";

Deno.test("kvm constants: ioctl numbers as the kernel headers encode them", () => {
  assert.equal(KvmIoctl.KVM_GET_API_VERSION, 0xae00n);
  assert.equal(KvmIoctl.KVM_CREATE_VM, 0xae01n);
  assert.equal(KvmIoctl.KVM_CHECK_EXTENSION, 0xae03n);
  assert.equal(KvmIoctl.KVM_GET_VCPU_MMAP_SIZE, 0xae04n);
  assert.equal(KvmIoctl.KVM_CREATE_VCPU, 0xae41n);
  assert.equal(KvmIoctl.KVM_SET_USER_MEMORY_REGION, 0x4020ae46n);
  assert.equal(KvmIoctl.KVM_SET_TSS_ADDR, 0xae47n);
  assert.equal(KvmIoctl.KVM_RUN, 0xae80n);
  assert.equal(KvmIoctl.KVM_GET_REGS, 0x8090ae81n);
  assert.equal(KvmIoctl.KVM_SET_REGS, 0x4090ae82n);
  assert.equal(KvmIoctl.KVM_GET_SREGS, 0x8138ae83n);
  assert.equal(KvmIoctl.KVM_SET_SREGS, 0x4138ae84n);
  assert.equal(KvmIoctl.KVM_PRE_FAULT_MEMORY, 0xc040aed5n);
  assert.equal(KvmCap.KVM_CAP_PRE_FAULT_MEMORY, 236);
  assert.equal(KvmRunLayout.mmioIsWrite, 52);
  assert.equal(kvmExitName(KvmExit.KVM_EXIT_MEMORY_FAULT), "KVM_EXIT_MEMORY_FAULT");
  assert.equal(kvmExitName(200), "KVM_EXIT_200");
});

Deno.test("kvm registers: struct kvm_regs and kvm_sregs field placement", () => {
  const regs = new KvmRegs();
  regs.set("rbx", 0x1122334455667788n);
  regs.set("rflags", -1n);
  assert.equal(regs.get("rbx"), 0x1122334455667788n);
  assert.deepEqual([...regs.buffer.subarray(8, 16)], [
    0x88,
    0x77,
    0x66,
    0x55,
    0x44,
    0x33,
    0x22,
    0x11,
  ]);
  assert.equal(regs.get("rflags"), 0xffff_ffff_ffff_ffffn);
  assert.equal(regs.buffer.length, 144);

  const sregs = new KvmSregs();
  assert.equal(sregs.buffer.length, 312);
  const cs = {
    base: 0x1000n,
    limit: 0xffffffff,
    selector: 8,
    type: 0xb,
    present: 1,
    dpl: 0,
    db: 1,
    s: 1,
    l: 0,
    g: 1,
    avl: 0,
    unusable: 0,
  };
  sregs.setSegment("ss", cs);
  assert.deepEqual(sregs.segment("ss"), cs);
  assert.equal(sregs.buffer[120 + 14], 0xb); // ss.type
  sregs.setDtable("idt", { base: 0x2000n, limit: 0x7ff });
  assert.deepEqual(sregs.dtable("idt"), { base: 0x2000n, limit: 0x7ff });
  sregs.set("efer", 0x500n);
  assert.equal(sregs.buffer[264 + 1], 0x5);
});

Deno.test({
  name: "kvm wrappers: system, vm and vcpu ioctls",
  ignore: skipWithoutKvm(),
  fn: async (t) => {
    const fdsBefore = openFdCount();
    const kvm = KvmSystem.open();
    const vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);

    await t.step("system queries", () => {
      assert.equal(kvm.apiVersion(), 12);
      assert.ok(kvm.vcpuMmapSize() >= 4096);
      assert.equal(kvm.checkExtension(KvmCap.KVM_CAP_USER_MEMORY), 1);
      assert.ok(vm.checkExtension(KvmCap.KVM_CAP_NR_MEMSLOTS) >= 32);
    });

    await t.step("failures are SyscallErrors named after the ioctl", () => {
      assert.throws(() => vm.createVcpu(0), (err: unknown) => {
        assert.ok(err instanceof SyscallError);
        assert.equal(err.syscall, "ioctl(KVM_CREATE_VCPU)");
        assert.equal(err.code, "EEXIST");
        return true;
      });
      assert.throws(
        () =>
          vm.setUserMemoryRegion({
            slot: 0,
            flags: 0,
            guestPhysAddr: 0x123n,
            memorySize: 0x1000n,
            userspaceAddr: 0n,
          }),
        (err: unknown) => {
          assert.ok(err instanceof SyscallError);
          assert.equal(err.syscall, "ioctl(KVM_SET_USER_MEMORY_REGION)");
          assert.equal(err.code, "EINVAL");
          return true;
        },
      );
    });

    await t.step("registers round-trip through the vcpu", () => {
      const regs = vcpu.getRegs();
      assert.equal(regs.get("rip"), 0xfff0n); // reset vector
      regs.set("rax", 0xabcdefn);
      vcpu.setRegs(regs);
      assert.equal(vcpu.getRegs().get("rax"), 0xabcdefn);
      const sregs = vcpu.getSregs();
      assert.equal(sregs.segment("cs").base, 0xffff0000n);
      sregs.set("cr0", sregs.get("cr0") | 1n);
      vcpu.setSregs(sregs);
      assert.equal(vcpu.getSregs().get("cr0") & 1n, 1n);
    });

    await t.step("immediate_exit makes KVM_RUN return KVM_EXIT_INTR", () => {
      vcpu.immediateExit = true;
      assert.equal(vcpu.immediateExit, true);
      assert.equal(vcpu.run(), KvmExit.KVM_EXIT_INTR);
      assert.equal(vcpu.exitReason, KvmExit.KVM_EXIT_INTR);
      vcpu.immediateExit = false;
      vcpu.completePendingIo(); // nothing pending: still fine
      assert.equal(vcpu.immediateExit, false);
    });

    await t.step("a second VM handle keeps the VM alive", () => {
      const clone = vm.tryClone();
      assert.equal(clone.checkExtension(KvmCap.KVM_CAP_READONLY_MEM), 1);
      clone[Symbol.dispose]();
    });

    await t.step("dispose closes every fd", () => {
      vcpu[Symbol.dispose]();
      vcpu[Symbol.dispose]();
      assert.throws(() => vcpu.exitReason, /kvm vcpu has been disposed/);
      vm[Symbol.dispose]();
      kvm[Symbol.dispose]();
      assert.equal(openFdCount(), fdsBefore);
    });
  },
});

Deno.test({
  name: "kvm wrappers: opening a missing device fails with ENOENT",
  ignore: skipWithoutKvm(),
  fn: () => {
    assert.throws(() => KvmSystem.open("/dev/no-such-kvm"), (err: unknown) => {
      assert.ok(err instanceof SyscallError);
      assert.equal(err.code, "ENOENT");
      return true;
    });
  },
});
