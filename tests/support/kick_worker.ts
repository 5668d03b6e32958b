/**
 * A Worker for tests/kvm_vcpu_io_test.ts: kicks the vCPU whose token it is
 * sent, from its own thread, while the test's thread is blocked in KVM_RUN.
 */
import { kickVcpu, type KvmVcpuKick } from "../../kvm.ts";

declare const self: Worker & { close(): void };

self.onmessage = (event: MessageEvent<{ kick: KvmVcpuKick; afterMs: number }>) => {
  setTimeout(() => {
    kickVcpu(event.data.kick);
    self.postMessage("kicked");
  }, event.data.afterMs);
};
