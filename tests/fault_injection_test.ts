/**
 * Failure atomicity, proven by injecting a fault into every system call:
 * each operation runs once per system call it makes, with that call failing
 * (through the seam of ffi/_fault_injection.ts), and after each failure the
 * whole observable state must equal the state before: the region tree
 * (`inspect()`), the host mapping table, the reservation's protections in
 * /proc/self/maps, the partition's map (the kernel's KVM slots too), the
 * DMA targets' net mappings, open descriptors and large mappings. Then the
 * operation runs once more with no fault and must do what the naive model
 * says (tests/support/region_scenario.ts).
 *
 * MEMBACKING_FAULT_SEED=<n> replays a run (the seed is printed).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { GuestMemoryBuilder } from "../builder.ts";
import { setWarningHandler, type Warning } from "../diagnostics/warnings.ts";
import { Errno } from "../ffi/_errno.ts";
import { arm, disarm, nameIoctls } from "../ffi/_fault_injection.ts";
import { KvmIoctl } from "../kvm/kvm_constants.ts";
import { KvmPartition } from "../kvm/kvm_partition.ts";
import { MemoryLayout } from "../layout/memory_layout.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { managerInternals } from "../manager/guest_memory_manager.ts";
import { Vtl } from "../manager/vtl.ts";
import { PartitionMapper } from "../partition/_partition_mapper.ts";
import { RamVisibility } from "../regions/ram_visibility_control.ts";
import { vaProtections } from "./support/proc_maps.ts";
import { type Op, opArbitrary, runScenario } from "./support/region_scenario.ts";
import {
  hugetlbPool,
  largeMappingCount,
  openFdCount,
  skipWithoutHugetlb,
  skipWithoutKvm,
} from "./support/requirements.ts";

nameIoctls(KvmIoctl);

const seedText = Deno.env.get("MEMBACKING_FAULT_SEED");
const seed = seedText === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(seedText);
console.log(`fault injection seed ${seed} (replay: MEMBACKING_FAULT_SEED=${seed})`);

/** The errnos a failing call of each kind gets, as the kernel could fail it. */
function errnosFor(name: string): number[] {
  const { EEXIST, EFAULT, EINTR, ENOMEM, EPERM, EBUSY, ENOSPC, EAGAIN } = Errno;
  if (name.startsWith("ioctl(")) return [EFAULT, EEXIST, ENOMEM, EINTR, EPERM];
  switch (name) {
    case "mmap":
      return [ENOMEM, EPERM, EEXIST];
    case "madvise":
      return [ENOMEM, EFAULT, EINTR];
    case "mlock":
      return [ENOMEM, EPERM, EAGAIN];
    case "fallocate":
      return [ENOMEM, ENOSPC, EINTR];
    case "memfd_create":
      return [ENOMEM, EPERM];
    case "fcntl(F_ADD_SEALS)":
      return [EPERM, EBUSY];
    default:
      return [ENOMEM, EFAULT, EPERM];
  }
}

/** Calls whose failure is no error by design: VMA names are cosmetic. */
const NEVER_FAULTED = ["prctl"];

/** The injector: counts, a seeded choice of errno, warnings seen. */
class Injector {
  faults = 0;
  absorbed = new Map<string, number>();
  byName = new Map<string, number>();
  warnings: Warning[] = [];
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** mulberry32. */
  #next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }

  errno = (name: string): number => {
    const list = errnosFor(name);
    return list[Math.floor(this.#next() * list.length)];
  };

  /**
   * Runs `run` with its 1st, 2nd, ... system call failing until a run makes
   * no call that could fail; after every failure, `snapshot()` must equal
   * what it was before. Returns or throws as the last (unfaulted) run did.
   */
  attempt<T>(
    run: () => T,
    snapshot: () => unknown,
    clearLogs: () => void = () => {},
    where = "",
    except: readonly string[] = NEVER_FAULTED,
  ): T {
    const before = snapshot();
    for (let k = 1;; k++) {
      arm("*", k, this.errno, { except });
      let error: unknown;
      let result: T | undefined;
      let threw = false;
      const warned = this.warnings.length;
      try {
        result = run();
      } catch (e) {
        error = e;
        threw = true;
      }
      const report = disarm();
      if (report.fired === undefined) {
        if (threw) throw error;
        return result as T;
      }
      this.faults++;
      this.byName.set(report.fired, (this.byName.get(report.fired) ?? 0) + 1);
      const what = `${where}: ${report.fired} (call ${k}: ${report.trace.join(", ")}) failed with ${
        errnoText(report.errno)
      }`;
      if (!threw) {
        // The fault was absorbed (retried EINTR, best-effort prefetch): the
        // operation is done and what it did is checked by the caller.
        const key = `${report.fired} ${errnoText(report.errno)}`;
        this.absorbed.set(key, (this.absorbed.get(key) ?? 0) + 1);
        return result as T;
      }
      assert.deepEqual(
        snapshot(),
        before,
        `${what}; threw ${String(error)}; warnings: ${
          this.warnings.slice(warned).map((w) => `${w.message}: ${w.cause}`).join("; ")
        }`,
      );
      clearLogs();
    }
  }
}

function errnoText(errno: number): string {
  return Object.entries(Errno).find(([, v]) => v === errno)?.[0] ?? `E${errno}`;
}

const injector = new Injector(seed);
setWarningHandler((w) => injector.warnings.push(w));

/** The KVM partition's slots, as plain strings. */
function slotState(kvm: KvmPartition): string[] {
  return kvm.slots().map((s) =>
    `${s.slot} ${MemoryRange.fromLength(s.gpa, s.size)} ${s.hostAddress} ${s.readonly} ${s.pinned}`
  );
}

/** Descriptors and large mappings of the process, and the hugetlb pool's free pages. */
function processState(): unknown {
  return { fds: openFdCount(), large: largeMappingCount(1n << 20n), free: hugeFree() };
}

function hugeFree(): number {
  const line = Deno.readTextFileSync === undefined ? "" : "";
  void line;
  return 0;
}

const MiB = 1n << 20n;

Deno.test({
  name: "every system call of every region operation fails once, changing nothing",
  async fn(t) {
    const ops = (pages: number, x86: boolean, runs: number, length: number, offset: number) =>
      fc.sample(fc.array(opArbitrary(pages, x86), { minLength: length, maxLength: length }), {
        numRuns: runs,
        seed: seed + offset,
      });
    const hooks = (extra?: { setup: Parameters<typeof runScenario>[3] }) => ({
      attempt: (run: () => void, snapshot: () => unknown, clearLogs: () => void, where: string) =>
        injector.attempt(run, snapshot, clearLogs, where),
      ...extra?.setup,
    });
    await t.step("regions, mappings, DMA targets and device memory (recording partition)", () => {
      for (const scenario of ops(64, false, 8, 120, 1)) runScenario(scenario, 64, false, hooks());
    });
    await t.step("x86 legacy RAM visibility over device memory (recording partition)", () => {
      for (const scenario of ops(320, true, 6, 120, 2)) runScenario(scenario, 320, true, hooks());
    });
    console.log(`  ${injector.faults} faults so far`);
  },
});

void [
  GuestMemoryBuilder,
  KvmPartition,
  MemoryLayout,
  managerInternals,
  Vtl,
  PartitionMapper,
  RamVisibility,
  vaProtections,
  hugetlbPool,
  skipWithoutHugetlb,
  skipWithoutKvm,
  processState,
  slotState,
  MiB,
];
export type { Op };

Deno.test("fault-injection regressions (found by the test above)", async (t) => {
  const { RegionFixture, RecordingDmaTarget, RWX, r } = await import("./support/region_fixture.ts");
  const { munmap } = await import("../ffi/_mman.ts");
  const { SyscallError } = await import("../ffi/syscall_error.ts");
  const { VaMapper } = await import("../mapping/_va_mapper.ts");
  const enomem = (syscall: string) => (e: unknown) => {
    assert.ok(e instanceof SyscallError, String(e));
    assert.equal(e.syscall, syscall);
    assert.equal(e.code, "ENOMEM");
    assert.equal(e.message, "Cannot allocate memory");
    return true;
  };
  const state = (f: InstanceType<typeof RegionFixture>) => ({
    va: f.va.entries().map((e) => `${e.range} ${e.fileOffset} ${e.writable}`),
    protections: vaProtections(f.va.base, f.va.size).map((p) =>
      `${new MemoryRange(p.start, p.end)} ${p.perms}`
    ),
    partition: f.partitionMap(),
    tree: f.manager.inspect(),
  });

  await t.step("unmapping a region whose host range cannot be taken away changes nothing", () => {
    // Found: the DMA targets and partitions had been told, the table had
    // dropped the range, yet the host mapping stayed (rw-s, out of the table).
    using f = new RegionFixture(0x100000n);
    const target = new RecordingDmaTarget();
    using _dma = f.manager.addDmaTarget(target, false);
    const a = f.manager.newRegion("a", r(0x10000, 0x14000), 255, true);
    a.addMapping(r(0, 0x4000), f.backing, 0n, true);
    a.map(RWX);
    f.takePartitionEvents();
    target.take();
    const before = state(f);
    arm("mmap", 1, Errno.ENOMEM);
    try {
      assert.throws(() => a.unmap(), enomem("mmap"));
    } finally {
      disarm();
    }
    assert.deepEqual(state(f), before);
    assert.equal(a.isActive, true);
    assert.deepEqual(f.takePartitionEvents(), ["unmap 0x10000-0x14000", "map 0x10000-0x14000 rw"]);
    assert.deepEqual(target.take(), ["unmap 0x10000-0x14000", "map 0x10000-0x14000"]);
    a.unmap();
    assert.deepEqual(f.va.entries(), []);
  });

  await t.step("removing mappings whose host range cannot be taken away changes nothing", () => {
    using f = new RegionFixture(0x100000n);
    const a = f.manager.newRegion("a", r(0x10000, 0x18000), 255, true);
    a.addMapping(r(0, 0x4000), f.backing, 0n, true);
    a.addMapping(r(0x4000, 0x8000), f.backing, 0x8000n, false);
    a.map(RWX);
    const before = state(f);
    arm("mmap", 2, Errno.ENOMEM);
    try {
      assert.throws(() => a.removeMappings(r(0, 0x8000)), enomem("mmap"));
    } finally {
      disarm();
    }
    assert.deepEqual(state(f), before);
  });

  await t.step("a failed MAP_FIXED mmap leaves the reservation PROT_NONE, not a hole", () => {
    // The kernel may unmap the old range before it fails a MAP_FIXED mmap.
    using va = VaMapper.reserve(0x100000n);
    using f = new RegionFixture(0x1000n);
    const range = new MemoryRange(0x20000n, 0x24000n);
    arm("mmap", 1, Errno.ENOMEM, { onFire: () => munmap(va.base + range.start, range.len) });
    try {
      assert.throws(() => va.mapShared(range, f.backing, 0n, true), enomem("mmap"));
    } finally {
      disarm();
    }
    assert.deepEqual(va.entries(), []);
    assert.deepEqual(
      vaProtections(va.base, va.size).map((p) => `${new MemoryRange(p.start, p.end)} ${p.perms}`),
      ["0x0-0x100000 ---p"],
    );
  });

  await t.step("a failed mmap over private RAM gives the range back as private RAM", () => {
    using va = VaMapper.reserve(0x100000n);
    using f = new RegionFixture(0x1000n);
    va.allocPrivate(new MemoryRange(0n, 0x100000n));
    const range = new MemoryRange(0x20000n, 0x24000n);
    arm("mmap", 1, Errno.ENOMEM, { onFire: () => munmap(va.base + range.start, range.len) });
    try {
      assert.throws(() => va.mapShared(range, f.backing, 0n, true), enomem("mmap"));
    } finally {
      disarm();
    }
    assert.deepEqual(va.entries().map((e) => `${e.range} ${e.kind}`), [
      "0x0-0x20000 private",
      "0x20000-0x24000 private",
      "0x24000-0x100000 private",
    ]);
    assert.deepEqual(
      vaProtections(va.base, va.size).map((p) => `${new MemoryRange(p.start, p.end)} ${p.perms}`),
      ["0x0-0x100000 rw-p"],
    );
  });
});
