/**
 * The interruptible calls under a 1 kHz signal storm (a SIGUSR1 listener
 * installed), each mode in a process of its own (tests/support/signal_storm.ts
 * says why): prefetch at attach (`KVM_PRE_FAULT_MEMORY` or
 * `MADV_POPULATE_WRITE`), pinning (`mlock`), slot changes
 * (`KVM_SET_USER_MEMORY_REGION`), dirty tracking with snapshots (the
 * dirty-log ioctls) and `manager.prefetch()` on Deno's blocking pool. Hugetlb builds (fallocate) are
 * tests/hugetlb_test.ts's. Every round must succeed with no warning.
 */
import assert from "node:assert/strict";
import type { StormResult } from "./support/signal_storm.ts";
import { skipWithoutKvm } from "./support/requirements.ts";

const ROUNDS: Record<string, number> = {
  prefetch: 8,
  pin: 8,
  slots: 20,
  dirty: 8,
  parallelPrefetch: 8,
};

for (const [mode, rounds] of Object.entries(ROUNDS)) {
  Deno.test({
    name: `${rounds} rounds of ${mode} under a 1 kHz signal storm all succeed`,
    ignore: skipWithoutKvm(),
    async fn() {
      const script = new URL("./support/signal_storm.ts", import.meta.url).pathname;
      const output = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-ffi", "--allow-run", script, mode, String(rounds)],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(output.stdout).trim();
      assert.ok(output.success, new TextDecoder().decode(output.stderr));
      const result = JSON.parse(stdout.split("\n").at(-1)!) as StormResult;
      assert.deepEqual(result.failures, []);
      assert.equal(result.built, rounds);
      // Signals pending together are counted once per turn of the event
      // loop (one turn per round), and the storm's shell can be starved on
      // a busy host for a short round: most rounds, not all, must see one.
      assert.ok(
        result.signalTurns >= Math.ceil(rounds * 3 / 4),
        `signals arrived in only ${result.signalTurns} of ${rounds} turns`,
      );
    },
  });
}
