/**
 * Failure atomicity of dirty tracking, snapshots and prefetch, proven by
 * injecting a fault into every system call (the seam of
 * ffi/_fault_injection.ts, the injector of tests/support/fault_injector.ts):
 * seeded random sequences of tracker operations (start, stop, dirtyPages,
 * reset), snapshot operations (take, restore, restoreDirty,
 * restoreVisibility, toBacking), RAM visibility changes and
 * `manager.prefetch()`, between host writes (through GuestMemory) and
 * guest writes (a GuestProbe store), with a KVM partition attached. Each
 * operation runs once per system call it makes, with that call failing;
 * after each failure the error must be the operation's own (the OS error at
 * the end of its cause chain) and the state as before: `inspect()`, the
 * KVM slots, the reservation's protections, descriptors and mappings, the
 * tracker's switch and point, the partition's logging switch and every
 * slot's `KVM_MEM_LOG_DIRTY_PAGES` in the kernel (asked with
 * `KVM_GET_DIRTY_LOG`, which only reads under manual protect). Then the
 * operation runs with no fault and must do what the model says: the dirty
 * pages exactly the pages written since the point (so a failed call that
 * lost a bit shows), a restore exactly the snapshot's bytes.
 *
 * What a failure leaves (documented on the operations):
 * - `dirtyPages()`, `reset()`: nothing is lost; the next successful call
 *   reports every page written since the point.
 * - `start()`, `stop()`, `take()`: nothing changes.
 * - `restore()`, `restoreDirty()`: RAM partly restored; visibility and the
 *   point as before, every page that may have been written counted dirty;
 *   a retry gives the snapshot exactly.
 *
 * MEMBACKING_FAULT_SEED=<n> replays a run (the seed is printed).
 */
import assert from "node:assert/strict";
import { GuestMemoryBuilder } from "../builder.ts";
import { setWarningHandler } from "../diagnostics/warnings.ts";
import { arm, disarm, nameIoctls } from "../ffi/_fault_injection.ts";
import { SyscallError } from "../ffi/syscall_error.ts";
import { hostBytes } from "../ffi/_host_memory.ts";
import { KvmIoctl } from "../kvm/kvm_constants.ts";
import { KvmPartition } from "../kvm/kvm_partition.ts";
import { MemoryLayout } from "../layout/memory_layout.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { type GuestMemoryManager, managerInternals } from "../manager/guest_memory_manager.ts";
import { PrefetchError } from "../manager/prefetch_error.ts";
import { Vtl } from "../manager/vtl.ts";
import { GuestMemoryClient } from "../guest_memory/guest_memory_client.ts";
import { RamVisibility } from "../regions/ram_visibility_control.ts";
import { RegionError } from "../regions/region_error.ts";
import { GuestRamSnapshot } from "../snapshot/guest_ram_snapshot.ts";
import { SnapshotError } from "../snapshot/snapshot_error.ts";
import { GuestProbe } from "../testing/guest_probe.ts";
import {
  checkSlotsMatchRegions,
  errnoText,
  Injector,
  managerState,
  NEVER_FAULTED,
  processState,
} from "./support/fault_injector.ts";
import { hugetlbPool, skipWithoutHugetlb, skipWithoutKvm } from "./support/requirements.ts";
import { mulberry32Below, testSeed } from "./support/seeded_random.ts";

nameIoctls(KvmIoctl);

const MiB = 1n << 20n;
const PAGE = 4096n;

const seed = testSeed("MEMBACKING_FAULT_SEED", "fault injection");

const injector = new Injector(seed);
setWarningHandler((w) => injector.warnings.push(w));

/** Whether each slot logs dirty pages in the kernel: `KVM_GET_DIRTY_LOG` fails (ENOENT) otherwise. */
function kernelLogging(kvm: KvmPartition): string[] {
  return kvm.slots().map((s) => {
    const bitmap = new Uint8Array(new ArrayBuffer(Math.ceil(Number(s.size / PAGE) / 64) * 8));
    let logging = true;
    try {
      kvm.unsafeVm.getDirtyLog({ slot: s.slot, dirtyBitmap: bitmap });
    } catch (error) {
      assert.ok(error instanceof SyscallError && error.code === "ENOENT", String(error));
      logging = false;
    }
    return `${MemoryRange.fromLength(s.gpa, s.size)} ${logging ? "logging" : "-"}`;
  });
}

/** All of RAM, in snapshot (backing) order, as the host has it. */
function ramBytes(manager: GuestMemoryManager): Uint8Array {
  const parts = managerInternals(manager);
  const size = parts.ramRegions.reduce((n, r) => n + r.range.len, 0n);
  if (parts.backing !== undefined) {
    using backing = manager.sharedMemoryBacking()!;
    return backing.read(0n, Number(size));
  }
  const out = new Uint8Array(Number(size));
  let at = 0;
  for (const { range } of parts.ramRegions) {
    out.set(hostBytes(parts.va.base + range.start, range.len), at);
    at += Number(range.len);
  }
  return out;
}

/** The snapshot's bytes, in its own order. */
function snapshotBytes(snapshot: GuestRamSnapshot): Uint8Array {
  const out = new Uint8Array(Number(snapshot.size));
  for (const p of snapshot.pieces) {
    out.set(snapshot.read(p.range.start, Number(p.range.len)), Number(p.fileOffset));
  }
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Int32Array(a.buffer, a.byteOffset, a.length / 4);
  const y = new Int32Array(b.buffer, b.byteOffset, b.length / 4);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** The innermost cause of `error`. */
function rootCause(error: unknown): unknown {
  let at = error;
  while (at instanceof Error && at.cause !== undefined) at = at.cause;
  return at;
}

/** Asserts `error` is a failed system call of `op` reported as `kinds` allow. */
function checkError(error: unknown, op: string, kinds: readonly string[]): void {
  const root = rootCause(error);
  assert.ok(root instanceof SyscallError, `${op}: ${error} ends in ${root}`);
  const kind = error instanceof SnapshotError
    ? `${error.kind}${"step" in error.detail ? ` ${error.detail.step}` : ""}`
    : error instanceof PrefetchError
    ? `prefetch ${error.kind}`
    : error instanceof RegionError
    ? "region"
    : `${(error as Error).name}`;
  assert.ok(kinds.includes(kind), `${op}: ${kind} (${error}: ${root.syscall} ${root.code})`);
}

/** What the injector compares: the manager's state, the tracker's, the kernel's logging. */
function state(manager: GuestMemoryManager, kvm: KvmPartition): unknown {
  const tracker = manager.dirtyTracker();
  return {
    manager: managerState(manager, kvm),
    logging: kernelLogging(kvm),
    partitionLogging: kvm.isDirtyLogging,
    tracking: tracker.isTracking,
    point: tracker.point,
  };
}

/**
 * The async form of {@linkcode Injector.attempt} (for `prefetch()`): every
 * faultable call fails once in turn; a fault that is absorbed (a retried
 * EINTR, a failed `madvise_nonblocking` made again on this thread) moves on
 * to the next call instead of ending the enumeration. With `persist`, a
 * failed `madvise_nonblocking` fails again when it is made again on this
 * thread (as a kernel that cannot populate would fail both).
 */
async function attemptAsync(
  run: () => Promise<void>,
  snapshot: () => unknown,
  where: string,
  check: (error: unknown) => void,
  persist = false,
): Promise<void> {
  const before = snapshot();
  const onFire = (name: string) => {
    if (persist && name === "madvise_nonblocking") arm("madvise", 1, injector.errno("madvise"));
  };
  for (let k = 1;; k++) {
    arm("*", k, injector.errno, { except: NEVER_FAULTED, onFire });
    let error: unknown;
    let threw = false;
    try {
      await run();
    } catch (e) {
      error = e;
      threw = true;
    }
    const report = disarm();
    if (report.fired === undefined) {
      if (threw) throw error;
      return;
    }
    injector.count(report.fired, report.errno, !threw);
    const what = `${where}: ${report.fired} (call ${k}) failed with ${errnoText(report.errno)}`;
    if (threw) {
      check(error);
      assert.equal(
        (rootCause(error) as SyscallError).errno,
        report.errno,
        `${what}: ${error}`,
      );
    }
    assert.deepEqual(snapshot(), before, `${what}; threw ${String(error)}`);
  }
}

/** A guest build for the model test. */
interface Build {
  readonly name: string;
  readonly builder: () => GuestMemoryBuilder;
  readonly layout: MemoryLayout;
  readonly x86?: true;
  readonly huge?: true;
  /** Whether a shared client reads, so that changes wait for readers (membarrier). */
  readonly reader?: true;
}

const BUILDS: readonly Build[] = [
  {
    name: "shared, x86 legacy, with a shared reader",
    builder: () => new GuestMemoryBuilder().x86LegacySupport(true),
    layout: MemoryLayout.fromGaps(4n * MiB, []),
    x86: true,
    reader: true,
  },
  {
    name: "shared, two RAM ranges",
    builder: () => new GuestMemoryBuilder(),
    layout: MemoryLayout.fromGaps(8n * MiB, [new MemoryRange(4n * MiB, 6n * MiB)]),
  },
  {
    name: "private, two RAM ranges",
    builder: () => new GuestMemoryBuilder().privateMemory(true),
    layout: MemoryLayout.fromGaps(4n * MiB, [new MemoryRange(2n * MiB, 4n * MiB)]),
  },
  {
    name: "hugetlb",
    builder: () => new GuestMemoryBuilder().hugepages(),
    layout: MemoryLayout.fromGaps(4n * MiB, []),
    huge: true,
  },
];

const OPS = [
  "hostWrite",
  "guestWrite",
  "start",
  "stop",
  "dirtyPages",
  "reset",
  "take",
  "restore",
  "restoreDirty",
  "restoreVisibility",
  "toBacking",
  "visibility",
  "prefetch",
] as const;

/** One seeded sequence of `length` operations on a fresh guest of `build`. */
async function runScenario(build: Build, scenarioSeed: number, length: number): Promise<void> {
  const next = mulberry32Below(scenarioSeed);
  using stack = new DisposableStack();
  const manager = stack.use(build.builder().build(build.layout));
  const kvm = stack.use(KvmPartition.create());
  stack.use(manager.attachPartition(Vtl.Vtl0, kvm));
  const probe = stack.use(GuestProbe.create(kvm, { codeGpa: PROBE_CODE }));
  const memory = manager.client().guestMemory();
  if (build.reader) {
    const reader = stack.use(
      GuestMemoryClient.fromShare(manager.client().share(), { name: "reader" }).guestMemory(),
    );
    reader.readU32(0n);
  }
  /** The snapshots, what the guest saw when each was taken, and the point each belongs to. */
  const snapshots: {
    snapshot: GuestRamSnapshot;
    visibility: string[];
    point: number | undefined;
  }[] = [];
  stack.defer(() => {
    for (const s of snapshots) s.snapshot[Symbol.dispose]();
  });
  const tracker = manager.dirtyTracker();
  const control = manager.ramVisibilityControl();
  const ram = managerInternals(manager).ramRegions.map((r) => r.range);
  const visibility = () =>
    managerInternals(manager).ramRegions.map((r) =>
      `${r.range} ${
        r.handle.mapParams === undefined ? "-" : r.handle.mapParams.writable ? "rw" : "ro"
      }`
    );
  const pieces = build.x86
    ? ram.filter((r) => r.start >= 0xa0000n && r.end <= 0x100000n && r.len <= 0x20000n)
    : [];
  /** The pages written since the point (while tracking). */
  let dirty = new Set<bigint>();
  const snap = () => state(manager, kvm);
  const attempt = <T>(op: string, kinds: readonly string[], run: () => T): T =>
    injector.attempt(
      () => {
        try {
          return run();
        } catch (error) {
          checkError(error, op, kinds);
          throw error;
        }
      },
      snap,
      undefined,
      `${build.name}, seed ${scenarioSeed}, ${op}`,
    );
  /** A random writable RAM page (host view), or undefined. */
  const writablePage = (): bigint | undefined => {
    for (let tries = 0; tries < 8; tries++) {
      const range = ram[next(ram.length)];
      const page = range.start + BigInt(next(Number(range.len / PAGE))) * PAGE;
      if (memory.isMapped(page, PAGE, true)) return page;
    }
    return undefined;
  };
  const sorted = (pages: Iterable<bigint>) => [...pages].sort((a, b) => (a < b ? -1 : 1));

  for (let step = 0; step < length; step++) {
    const op = OPS[next(OPS.length)];
    const where = `${build.name}, seed ${scenarioSeed}, step ${step} ${op}`;
    switch (op) {
      case "hostWrite": {
        for (let i = 0; i < 1 + next(4); i++) {
          const page = writablePage();
          if (page === undefined) continue;
          memory.writeU32(page + BigInt(next(1024)) * 4n, next(2 ** 31));
          if (tracker.isTracking) dirty.add(page);
        }
        break;
      }
      case "guestWrite": {
        for (let i = 0; i < 1 + next(4); i++) {
          const page = writablePage();
          if (page === undefined) continue;
          const result = probe.store(page + BigInt(next(1024)) * 4n, 4, next(2 ** 31));
          assert.deepEqual(result, { kind: "done" }, where);
          if (tracker.isTracking) dirty.add(page);
        }
        break;
      }
      case "start": {
        const was = tracker.isTracking;
        const point = tracker.point;
        attempt(op, ["tracking start"], () => tracker.start());
        assert.equal(tracker.isTracking, true, where);
        if (!was) {
          dirty = new Set();
          assert.ok(tracker.point > point, where);
        }
        assert.equal(kvm.isDirtyLogging, true, where);
        assert.ok(
          kernelLogging(kvm).every((s, i) => s.endsWith("logging") === !kvm.slots()[i].readonly),
          `${where}: ${kernelLogging(kvm)}`,
        );
        break;
      }
      case "stop": {
        attempt(op, ["tracking read", "tracking stop"], () => tracker.stop());
        assert.equal(tracker.isTracking, false, where);
        assert.equal(kvm.isDirtyLogging, false, where);
        assert.ok(kernelLogging(kvm).every((s) => s.endsWith(" -")), where);
        break;
      }
      case "dirtyPages": {
        const range = next(3) === 0 ? ram[next(ram.length)] : undefined;
        const pages = attempt(op, ["tracking read"], () => tracker.dirtyPages(range));
        const expected = sorted(dirty).filter((p) =>
          range === undefined || (p >= range.start && p < range.end)
        );
        assert.deepEqual(pages, expected, `${where} ${range ?? ""}`);
        break;
      }
      case "reset": {
        const point = tracker.point;
        attempt(op, ["tracking read"], () => tracker.reset());
        assert.ok(tracker.point > point, where);
        dirty = new Set();
        break;
      }
      case "take": {
        if (snapshots.length >= 3) snapshots.shift()!.snapshot[Symbol.dispose]();
        const point = tracker.point;
        const snapshot = attempt(
          op,
          ["tracking read", "copy snapshot"],
          () => GuestRamSnapshot.take(manager),
        );
        snapshots.push({
          snapshot,
          visibility: visibility(),
          point: tracker.isTracking ? tracker.point : undefined,
        });
        assert.ok(sameBytes(snapshotBytes(snapshot), ramBytes(manager)), where);
        if (tracker.isTracking) {
          assert.ok(tracker.point > point, where);
          dirty = new Set();
        }
        break;
      }
      case "restore":
      case "restoreDirty": {
        if (snapshots.length === 0) break;
        const entry = snapshots[next(snapshots.length)];
        const { snapshot, visibility: view } = entry;
        const kinds = ["tracking read", "copy restore", "visibility"];
        if (op === "restoreDirty") {
          if (!tracker.isTracking || entry.point !== tracker.point) {
            // Refused, changing nothing (and making no system call).
            const before = snap();
            assert.throws(() => snapshot.restoreDirty(manager), (e) => {
              assert.ok(e instanceof SnapshotError);
              if (!tracker.isTracking || entry.point === undefined) {
                assert.equal(e.kind, "notTracking");
              } else {
                assert.deepEqual(e.detail, {
                  kind: "stalePoint",
                  point: tracker.point,
                  snapshotPoint: entry.point,
                });
              }
              return true;
            });
            assert.deepEqual(snap(), before, where);
            break;
          }
          const copied = attempt(op, kinds, () => snapshot.restoreDirty(manager));
          assert.equal(copied, dirty.size, where);
        } else {
          attempt(op, kinds, () => snapshot.restore(manager));
        }
        entry.point = tracker.isTracking ? tracker.point : undefined;
        assert.ok(sameBytes(ramBytes(manager), snapshotBytes(snapshot)), `${where}: contents`);
        assert.deepEqual(visibility(), view, where);
        if (tracker.isTracking) dirty = new Set();
        break;
      }
      case "restoreVisibility": {
        if (snapshots.length === 0) break;
        const { snapshot, visibility: view } = snapshots[next(snapshots.length)];
        attempt(op, ["visibility"], () => snapshot.restoreVisibility(manager));
        assert.deepEqual(visibility(), view, where);
        break;
      }
      case "toBacking": {
        if (snapshots.length === 0 || build.huge) break;
        const { snapshot } = snapshots[next(snapshots.length)];
        const backing = attempt(op, ["copy clone"], () => snapshot.toBacking());
        try {
          assert.ok(
            sameBytes(backing.read(0n, Number(snapshot.size)), snapshotBytes(snapshot)),
            where,
          );
        } finally {
          backing[Symbol.dispose]();
        }
        break;
      }
      case "visibility": {
        if (pieces.length === 0) break;
        const piece = pieces[next(pieces.length)];
        const to = [RamVisibility.Unmapped, RamVisibility.ReadOnly, RamVisibility.ReadWrite][
          next(3)
        ];
        attempt(op, ["region"], () => control.setRamVisibility(piece, to));
        break;
      }
      case "prefetch": {
        for (const persist of [false, true]) {
          await attemptAsync(
            () => manager.prefetch({ threads: 2 }),
            snap,
            where,
            (error) => {
              checkError(error, op, ["prefetch populate"]);
              const { range } = (error as PrefetchError).detail;
              assert.ok(
                managerInternals(manager).va.entries().some((e) => e.range.equals(range)),
                `${where}: ${error}`,
              );
            },
            persist,
          );
        }
        break;
      }
    }
    checkSlots(manager, kvm, where);
  }
}

/** The probe's code page: its own read-only slot, no region's. */
const PROBE_CODE = 0xfffff000n;

/** What the guest sees (active regions) against the KVM slots but the probe's. */
function checkSlots(manager: GuestMemoryManager, kvm: KvmPartition, where: string): void {
  checkSlotsMatchRegions(manager, kvm, where, [PROBE_CODE]);
}

Deno.test({
  name: "every system call of every tracker, snapshot and prefetch operation fails once",
  ignore: skipWithoutKvm() || skipWithoutHugetlb(),
  async fn(t) {
    const fresh = processState(false);
    for (const [index, build] of BUILDS.entries()) {
      await t.step(build.name, async () => {
        if (build.huge && hugetlbPool() < 64) {
          assert.fail(`the hugetlb pool has ${hugetlbPool()} pages, not 64`);
        }
        const faults = injector.faults;
        for (let i = 0; i < 4; i++) await runScenario(build, seed + 100 * index + i, 60);
        console.log(`    ${injector.faults - faults} faults`);
      });
    }
    assert.deepEqual(processState(false), fresh, "descriptors or mappings leaked");
  },
});

Deno.test({
  name: "tracker, snapshot and prefetch failures: exact errors, and what they leave",
  ignore: skipWithoutKvm(),
  async fn(t) {
    const { Errno } = await import("../ffi/_errno.ts");
    const { KvmPartitionError } = await import("../kvm/kvm_partition_error.ts");
    /** Runs `fn` with the `nth` call named `name` failing with `errno`; returns what it threw. */
    const failing = (
      name: string,
      nth: number,
      errno: number,
      fn: () => unknown,
      onFire?: () => void,
    ) => {
      arm(name, nth, errno, { onFire });
      try {
        fn();
      } catch (error) {
        return error;
      } finally {
        assert.equal(disarm().fired, name);
      }
      assert.fail(`${name} failing did not fail`);
    };
    const syscall = (error: unknown, name: string, code: string) => {
      assert.ok(error instanceof SyscallError, String(error));
      assert.equal(error.syscall, name);
      assert.equal(error.code, code);
    };
    const setup = () => {
      const stack = new DisposableStack();
      const manager = stack.use(
        new GuestMemoryBuilder().x86LegacySupport(true).build(MemoryLayout.fromGaps(4n * MiB, [])),
      );
      const kvm = stack.use(KvmPartition.create());
      stack.use(manager.attachPartition(Vtl.Vtl0, kvm));
      const probe = stack.use(GuestProbe.create(kvm, { codeGpa: PROBE_CODE }));
      const writable = () => kvm.slots().filter((s) => !s.readonly);
      const logged = () => kernelLogging(kvm).filter((l) => l.endsWith("logging")).length;
      return {
        stack,
        manager,
        kvm,
        probe,
        writable,
        logged,
        tracker: manager.dirtyTracker(),
        memory: manager.client().guestMemory(),
      };
    };

    await t.step("start failing on the 3rd slot re-creation leaves every slot as it was", () => {
      const { stack, kvm, tracker, writable, logged } = setup();
      using _ = stack;
      const third = writable()[2];
      const error = failing(
        "ioctl(KVM_SET_USER_MEMORY_REGION)",
        3,
        Errno.EFAULT,
        () => tracker.start(),
      );
      assert.ok(error instanceof SnapshotError);
      assert.deepEqual(error.detail, { kind: "tracking", step: "start" });
      assert.equal(error.message, "failed to start dirty logging of a partition");
      assert.ok(error.cause instanceof KvmPartitionError);
      assert.equal(
        error.cause.message,
        `failed to log dirty pages of memory slot ${third.slot} at ${
          MemoryRange.fromLength(third.gpa, third.size)
        }`,
      );
      syscall(error.cause.cause, "ioctl(KVM_SET_USER_MEMORY_REGION)", "EFAULT");
      assert.equal(logged(), 0);
      assert.equal(tracker.isTracking, false);
      assert.equal(kvm.isDirtyLogging, false);
      assert.equal(tracker.point, 0);
      tracker.start();
      assert.equal(logged(), writable().length);
      assert.notEqual(tracker.point, 0);
    });

    await t.step("start failing to read the first log leaves nothing logging", () => {
      // Found: the partitions had started and stayed logging, tracking off.
      const { stack, kvm, tracker, logged } = setup();
      using _ = stack;
      const error = failing("ioctl(KVM_GET_DIRTY_LOG)", 1, Errno.ENOMEM, () => tracker.start());
      assert.ok(error instanceof SnapshotError);
      assert.deepEqual(error.detail, { kind: "tracking", step: "start" });
      assert.ok(error.cause instanceof KvmPartitionError);
      assert.equal(error.cause.kind, "dirtyLog");
      syscall(error.cause.cause, "ioctl(KVM_GET_DIRTY_LOG)", "ENOMEM");
      assert.equal(logged(), 0);
      assert.equal(kvm.isDirtyLogging, false);
    });

    await t.step("dirtyPages failing loses no dirty bit: the next call reports them", () => {
      const { stack, tracker, probe, memory } = setup();
      using _ = stack;
      tracker.start();
      assert.deepEqual(probe.store(0x1010n, 4, 1), { kind: "done" });
      assert.deepEqual(probe.store(0x200020n, 4, 2), { kind: "done" });
      memory.writeU32(0x300000n, 3);
      // The first slot's bits are read, then the second slot's clear (or
      // read) fails: what was read stays with the tracker, the rest in KVM.
      for (
        const [name, nth] of [
          ["ioctl(KVM_CLEAR_DIRTY_LOG)", 2],
          ["ioctl(KVM_GET_DIRTY_LOG)", 2],
        ] as const
      ) {
        const error = failing(name, nth, Errno.EFAULT, () => tracker.dirtyPages());
        assert.ok(error instanceof SnapshotError);
        assert.deepEqual(error.detail, { kind: "tracking", step: "read" });
        assert.equal(error.message, "failed to read dirty logging of a partition");
        syscall((error.cause as Error).cause, name, "EFAULT");
      }
      assert.deepEqual(tracker.dirtyPages(), [0x1000n, 0x200000n, 0x300000n]);
    });

    await t.step("stop failing keeps tracking on, every slot logging, every bit", () => {
      const { stack, kvm, tracker, probe, memory, writable, logged } = setup();
      using _ = stack;
      tracker.start();
      assert.deepEqual(probe.store(0x2000n, 4, 1), { kind: "done" });
      memory.writeU8(0x100000n, 1);
      const error = failing(
        "ioctl(KVM_SET_USER_MEMORY_REGION)",
        2,
        Errno.ENOMEM,
        () => tracker.stop(),
      );
      assert.ok(error instanceof SnapshotError);
      assert.deepEqual(error.detail, { kind: "tracking", step: "stop" });
      assert.equal(error.message, "failed to stop dirty logging of a partition");
      syscall((error.cause as Error).cause, "ioctl(KVM_SET_USER_MEMORY_REGION)", "ENOMEM");
      assert.equal(tracker.isTracking, true);
      assert.equal(kvm.isDirtyLogging, true);
      assert.equal(logged(), writable().length);
      assert.deepEqual(probe.store(0x3000n, 4, 1), { kind: "done" });
      tracker.stop();
      assert.equal(logged(), 0);
      assert.deepEqual(tracker.dirtyPages(), [0x2000n, 0x3000n, 0x100000n]);
    });

    await t.step("take failing keeps the point and the dirty pages", () => {
      // Found: take reset the tracker before copying, so a failed take lost
      // the dirty pages and made the last snapshot's restoreDirty stale.
      const { stack, manager, tracker, memory } = setup();
      using _ = stack;
      tracker.start();
      using first = GuestRamSnapshot.take(manager);
      memory.writeU32(0x5000n, 0xaa);
      const point = tracker.point;
      const fds = processState(false);
      for (
        const [name, errno, code] of [
          ["memfd_create", Errno.ENOMEM, "ENOMEM"],
          ["ftruncate", Errno.EPERM, "EPERM"],
          ["copy_file_range", Errno.ENOMEM, "ENOMEM"],
          ["fcntl(F_ADD_SEALS)", Errno.EPERM, "EPERM"],
        ] as const
      ) {
        const error = failing(name, 1, errno, () => GuestRamSnapshot.take(manager));
        assert.ok(error instanceof SnapshotError, String(error));
        assert.deepEqual(error.detail, { kind: "copy", step: "snapshot", bytes: 4n * MiB });
        assert.equal(error.message, "failed to snapshot guest RAM (4194304 bytes)");
        syscall(error.cause, name, code);
        assert.equal(tracker.point, point);
        assert.deepEqual(tracker.dirtyPages(), [0x5000n]);
        assert.deepEqual(processState(false), fds, `${name}: a descriptor or mapping stayed`);
      }
      assert.equal(first.restoreDirty(manager), 1);
      assert.equal(memory.readU32(0x5000n), 0);
    });

    await t.step("restore failing midway: the point stays, all RAM counts dirty", () => {
      const { stack, manager, tracker, memory } = setup();
      using _ = stack;
      tracker.start();
      memory.writeU32(0x1000n, 1);
      using older = GuestRamSnapshot.take(manager);
      memory.writeU32(0x1000n, 2);
      memory.writeU32(0x380000n, 2);
      using current = GuestRamSnapshot.take(manager);
      const point = tracker.point;
      memory.writeU32(0x2000n, 3);
      // The kernel copies the first 2 MiB, then fails.
      using backing = manager.sharedMemoryBacking()!;
      const error = failing("copy_file_range", 1, Errno.EIO, () => older.restore(manager), () => {
        backing.write(0n, older.read(0n, 0xa0000).subarray(0, 0xa0000));
        backing.write(0x100000n, older.read(0x100000n, 0x100000));
      });
      assert.ok(error instanceof SnapshotError);
      assert.deepEqual(error.detail, { kind: "copy", step: "restore", bytes: 4n * MiB });
      assert.equal(error.message, "failed to restore guest RAM (4194304 bytes)");
      syscall(error.cause, "copy_file_range", "EIO");
      assert.equal(memory.readU32(0x1000n), 1, "the partial copy");
      assert.equal(tracker.point, point);
      assert.equal(tracker.dirtyPages().length, 1024);
      // The point's snapshot still restores exactly (every page is copied).
      assert.equal(current.restoreDirty(manager), 1024);
      assert.ok(sameBytes(ramBytes(manager), snapshotBytes(current)));
      // And the failed restore, made again, gives its snapshot exactly.
      older.restore(manager);
      assert.ok(sameBytes(ramBytes(manager), snapshotBytes(older)));
      assert.deepEqual(tracker.dirtyPages(), []);
    });

    await t.step("restoreVisibility failing sets back what it changed", () => {
      const { stack, manager, kvm } = setup();
      using _ = stack;
      const control = manager.ramVisibilityControl();
      const a = new MemoryRange(0xc0000n, 0xc4000n);
      const b = new MemoryRange(0xe0000n, 0xe4000n);
      control.setRamVisibility(a, RamVisibility.ReadOnly);
      control.setRamVisibility(b, RamVisibility.Unmapped);
      using snapshot = GuestRamSnapshot.take(manager);
      control.setRamVisibility(a, RamVisibility.ReadWrite);
      control.setRamVisibility(b, RamVisibility.ReadWrite);
      const before = managerState(manager, kvm);
      let failures = 0;
      for (let k = 1;; k++) {
        arm("ioctl(KVM_SET_USER_MEMORY_REGION)", k, Errno.EFAULT);
        let error: unknown;
        try {
          snapshot.restoreVisibility(manager);
        } catch (e) {
          error = e;
        }
        if (disarm().fired === undefined) break;
        failures++;
        assert.ok(error instanceof SnapshotError, String(error));
        assert.deepEqual(error.detail, { kind: "visibility" });
        assert.equal(error.message, "failed to set the RAM visibility of the snapshot");
        assert.ok(error.cause instanceof RegionError, String(error.cause));
        assert.deepEqual(managerState(manager, kvm), before, `call ${k}`);
      }
      assert.ok(failures >= 2, `${failures} failures`);
      assert.equal(kvm.slotAt(a.start)?.readonly, true);
      assert.equal(kvm.slotAt(b.start), undefined);
    });

    await t.step(
      "prefetch failing names the range and the OS error; EINTR is retried",
      async () => {
        using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(4n * MiB, []));
        const fails = (errno: number) => {
          arm("madvise_nonblocking", 1, errno, { onFire: () => arm("madvise", 1, errno) });
        };
        fails(Errno.ENOMEM);
        const rejected = await manager.prefetch({ threads: 2 }).then(() => undefined, (e) => e);
        assert.equal(disarm().fired, "madvise");
        assert.ok(rejected instanceof PrefetchError, String(rejected));
        assert.deepEqual(rejected.detail, {
          kind: "populate",
          range: new MemoryRange(0n, 4n * MiB),
          advice: "MADV_POPULATE_WRITE",
        });
        assert.equal(
          rejected.message,
          "failed to prefetch guest RAM 0x0-0x400000 (MADV_POPULATE_WRITE)",
        );
        syscall(rejected.cause, "madvise", "ENOMEM");
        assert.equal((rejected.cause as Error).message, "Cannot allocate memory");
        fails(Errno.EINTR);
        await manager.prefetch({ threads: 2 });
        assert.deepEqual(disarm(), {
          fired: "madvise",
          errno: Errno.EINTR,
          // (The second part's nonblocking call, then the first made again.)
          trace: ["madvise_nonblocking", "madvise", "madvise"],
        });
      },
    );
  },
});

Deno.test("at least 1,000 faults were injected into tracker, snapshot and prefetch operations", () => {
  console.log(injector.summary(seed));
  assert.ok(injector.faults >= 1000, `only ${injector.faults} faults`);
});
