import assert from "node:assert/strict";
import { GuestMemoryBuilder } from "../builder.ts";
import { Fcntl } from "../ffi/_constants.ts";
import { readTextFile } from "../ffi/_proc_files.ts";
import { SyscallError } from "../ffi/syscall_error.ts";
import { MemoryLayout } from "../layout/memory_layout.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { MemoryBuildError } from "../manager/memory_build_error.ts";
import {
  hugetlbPool,
  openFdCount,
  skipWithoutHugetlb,
  withHugetlbPool,
} from "./support/requirements.ts";
import { managerInternals } from "../manager/guest_memory_manager.ts";
import type { StormResult } from "./support/signal_storm.ts";
import { duplicateBacking } from "../manager/shared_memory_backing.ts";

const MiB = 1n << 20n;
const HP = 2n * MiB;
const POOL = 4;

/** A HugePages_* counter of /proc/meminfo. */
function meminfo(field: "Free" | "Rsvd" | "Total"): number {
  const line = readTextFile("/proc/meminfo").split("\n").find((l) =>
    l.startsWith(`HugePages_${field}:`)
  );
  return Number(line!.split(/\s+/)[1]);
}

function hugetlbError(fn: () => unknown): MemoryBuildError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof MemoryBuildError, `expected MemoryBuildError, got ${error}`);
    return error;
  }
  assert.fail("build did not fail");
}

Deno.test({
  name: "hugetlb backing with a real pool",
  ignore: skipWithoutHugetlb(),
  async fn(t) {
    const before = hugetlbPool();
    await withHugetlbPool(POOL, async (granted) => {
      assert.equal(granted, POOL, "the kernel did not grant the whole pool");

      await t.step(`${POOL} x 2 MiB fits a pool of ${POOL}: every page taken at build`, () => {
        const layout = MemoryLayout.fromGaps(BigInt(POOL) * HP, [new MemoryRange(HP, 2n * HP)]);
        using manager = new GuestMemoryBuilder().hugepages().build(layout);
        // fallocate took every page now: none left, none merely reserved.
        assert.equal(meminfo("Free"), 0);
        assert.equal(meminfo("Rsvd"), 0);
        // The reservation is hugepage aligned so RAM above the gap maps too.
        assert.equal(managerInternals(manager).va.base % HP, 0n);
        assert.deepEqual(
          managerInternals(manager).va.entries().map((e) => [`${e.range}`, e.fileOffset]),
          [["0x0-0x200000", 0n], ["0x400000-0xa00000", HP]],
        );
        const memory = manager.client().guestMemory();
        memory.writeU64(0x400000n, 0x1122334455667788n);
        memory.writeU64(0x9ffff8n, 42n);
        assert.equal(memory.readU64(0x400000n), 0x1122334455667788n);
        assert.equal(memory.readU64(0x9ffff8n), 42n);
        using backing = manager.sharedMemoryBacking()!;
        assert.equal(backing.hugepageSize, HP);
        using fd = duplicateBacking(backing);
        assert.equal(fd.seals(), Fcntl.F_SEAL_SHRINK | Fcntl.F_SEAL_GROW | Fcntl.F_SEAL_SEAL);
        assert.throws(
          () => fd.truncate(HP),
          (e) => e instanceof SyscallError && e.code === "EPERM",
        );
      });
      assert.equal(meminfo("Free"), POOL, "disposing the manager returns the pages");

      await t.step(`${POOL + 1} pages fail at build with ENOMEM, leaving nothing`, () => {
        const fds = openFdCount();
        const layout = MemoryLayout.fromGaps(BigInt(POOL + 1) * HP, []);
        const error = hugetlbError(() => new GuestMemoryBuilder().hugepages().build(layout));
        assert.equal(error.kind, "hugepageAllocationFailed");
        assert.equal(
          error.message,
          `failed to reserve ${POOL + 1} hugetlb pages of 2 MB each (${
            (POOL + 1) * 2
          } MB total); increase the hugetlb pool or reduce guest memory size`,
        );
        assert.ok(error.cause instanceof SyscallError);
        assert.equal(error.cause.message, "Cannot allocate memory");
        assert.equal(error.cause.code, "ENOMEM");
        assert.equal(openFdCount(), fds);
        assert.equal(meminfo("Free"), POOL);
        assert.equal(meminfo("Rsvd"), 0);
      });

      await t.step("a second guest cannot take pages the first one holds", () => {
        using first = new GuestMemoryBuilder().hugepages().build(
          MemoryLayout.fromGaps(BigInt(POOL - 1) * HP, []),
        );
        const error = hugetlbError(() =>
          new GuestMemoryBuilder().hugepages(HP).build(MemoryLayout.fromGaps(2n * HP, []))
        );
        assert.equal(
          error.message,
          "failed to reserve 2 hugetlb pages of 2 MB each (4 MB total); increase the hugetlb pool or reduce guest memory size",
        );
        assert.equal((error.cause as SyscallError).code, "ENOMEM");
        using second = new GuestMemoryBuilder().hugepages(HP).build(
          MemoryLayout.fromGaps(HP, []),
        );
        assert.equal(meminfo("Free"), 0);
        assert.ok(managerInternals(first).va.base !== managerInternals(second).va.base);
      });

      await t.step(
        "an existing hugetlb backing is mapped hugepage-aligned by the next manager",
        () => {
          const layout = MemoryLayout.fromGaps(2n * HP, []);
          using first = new GuestMemoryBuilder().hugepages().build(layout);
          first.client().guestMemory().writeU32(HP + 4n, 0xfeedbeef);
          using backing = first.sharedMemoryBacking()!;
          using second = new GuestMemoryBuilder().existingBacking(backing).build(layout);
          assert.equal(managerInternals(second).va.base % HP, 0n);
          assert.equal(second.client().guestMemory().readU32(HP + 4n), 0xfeedbeef);
          // Its RAM must still come in whole hugepages.
          assert.throws(
            () =>
              new GuestMemoryBuilder().existingBacking(backing).build(
                MemoryLayout.fromGaps(HP + MiB, []),
              ),
            (e) => e instanceof MemoryBuildError && e.kind === "hugepageRamSizeUnaligned",
          );
        },
      );
    });
    assert.equal(hugetlbPool(), before, "the pool is restored");
  },
});

/** Pages of each guest built under the signal storm (64 MiB). */
const STORM_PAGES = 32;

Deno.test({
  name: "100 hugetlb builds under a 1 kHz signal storm all succeed",
  ignore: skipWithoutHugetlb(),
  async fn() {
    await withHugetlbPool(STORM_PAGES, async (granted) => {
      assert.equal(granted, STORM_PAGES, "the kernel did not grant the whole pool");
      const script = new URL("./support/signal_storm.ts", import.meta.url).pathname;
      const output = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-ffi", "--allow-run", script, "100", String(STORM_PAGES)],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(output.stdout).trim();
      assert.ok(output.success, new TextDecoder().decode(output.stderr));
      const result = JSON.parse(stdout.split("\n").at(-1)!) as StormResult;
      assert.deepEqual(result.failures, []);
      assert.equal(result.built, 100);
      // The listener sees the signals that arrive between two of its turns as one.
      assert.ok(
        result.signalTurns >= 20,
        `signals arrived in only ${result.signalTurns} turns of the event loop`,
      );
      assert.equal(meminfo("Free"), STORM_PAGES, "every build returned its pages");
    });
  },
});
