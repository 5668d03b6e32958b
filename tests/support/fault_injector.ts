/**
 * The fault injector of the failure-atomicity tests: runs an operation once
 * per system call it makes, with that call failing (through the seam of
 * ffi/_fault_injection.ts), and checks after each failure that a snapshot of
 * the observable state equals the one before; plus the snapshots those
 * tests compare (process resources, a manager with a KVM partition).
 */
import assert from "node:assert/strict";
import type { Warning } from "../../diagnostics/warnings.ts";
import { Errno } from "../../ffi/_errno.ts";
import { arm, disarm } from "../../ffi/_fault_injection.ts";
import { liveHostMappingCount } from "../../ffi/_host_mapping.ts";
import { readTextFile } from "../../ffi/_proc_files.ts";
import type { KvmPartition } from "../../kvm/kvm_partition.ts";
import { MemoryRange } from "../../layout/memory_range.ts";
import type { GuestMemoryManager } from "../../manager/guest_memory_manager.ts";
import { managerInternals } from "../../manager/guest_memory_manager.ts";
import { vaProtections } from "./proc_maps.ts";
import { openFdCount } from "./requirements.ts";
import { mulberry32 } from "./seeded_random.ts";

/** The errnos a failing call of each kind gets, as the kernel could fail it. */
export function errnosFor(name: string): number[] {
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
export const NEVER_FAULTED = ["prctl"];

/** The injector: counts, a seeded choice of errno, warnings seen. */
export class Injector {
  faults = 0;
  absorbed = new Map<string, number>();
  byName = new Map<string, number>();
  warnings: Warning[] = [];
  readonly #next: () => number;

  constructor(seed: number) {
    this.#next = mulberry32(seed);
  }

  /** Calls seen to be made again on EINTR: from then on they fail otherwise. */
  #retried = new Set<string>();
  /**
   * Calls whose failure was seen to be only a warning (best effort: munlock
   * after a slot is gone, prefetch): from then on they are not failed, so
   * that the calls after them in an operation get their turn (an absorbed
   * fault ends an operation's enumeration: it is done, not undone).
   */
  #bestEffort = new Set<string>();

  /** One line: how many faults, by call name, and which were absorbed (retried, best effort). */
  summary(seed: number): string {
    const names = [...this.byName].sort((a, b) => b[1] - a[1]).map(([n, c]) => `${n} ${c}`);
    const absorbed = [...this.absorbed].map(([n, c]) => `${n} ${c}`);
    return `${this.faults} faults injected (seed ${seed}): ${names.join(", ")}; absorbed: ${
      absorbed.join(", ") || "none"
    }`;
  }

  errno = (name: string): number => {
    const list = errnosFor(name).filter((e) => e !== Errno.EINTR || !this.#retried.has(name));
    return list[Math.floor(this.#next() * list.length)];
  };

  /** Counts a fault that fired in `name`, and whether the operation absorbed it (still succeeded). */
  count(name: string, errno: number, absorbed: boolean): void {
    this.faults++;
    this.byName.set(name, (this.byName.get(name) ?? 0) + 1);
    if (!absorbed) return;
    const key = `${name} ${errnoText(errno)}`;
    this.absorbed.set(key, (this.absorbed.get(key) ?? 0) + 1);
  }

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
      arm("*", k, this.errno, { except: [...except, ...this.#bestEffort] });
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
      this.count(report.fired, report.errno, !threw);
      const what = `${where}: ${report.fired} (call ${k}: ${report.trace.join(", ")}) failed with ${
        errnoText(report.errno)
      }`;
      if (!threw) {
        // The fault was absorbed (retried EINTR, best-effort prefetch): the
        // operation is done and what it did is checked by the caller.
        if (report.errno === Errno.EINTR) this.#retried.add(report.fired);
        else this.#bestEffort.add(report.fired);
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

export function errnoText(errno: number): string {
  return Object.entries(Errno).find(([, v]) => v === errno)?.[0] ?? `E${errno}`;
}

/**
 * The KVM partition's slots, as plain strings: what the kernel maps where.
 * Slot numbers are left out: a rolled-back change may give a region another
 * free number than it had, which changes nothing the guest or host sees.
 */
export function slotState(kvm: KvmPartition): string[] {
  return kvm.slots().map((s) =>
    `${MemoryRange.fromLength(s.gpa, s.size)} ${s.hostAddress} ${s.readonly} ${s.pinned}`
  );
}

/**
 * Descriptors, host mappings (reservations and the like, and shared file
 * mappings in /proc/self/maps) of the process, and the hugetlb pool's free
 * pages.
 */
export function processState(huge = true): unknown {
  const maps = readTextFile("/proc/self/maps");
  let fileMappings = 0;
  for (let at = maps.indexOf("/memfd:"); at >= 0; at = maps.indexOf("/memfd:", at + 1)) {
    fileMappings++;
  }
  return {
    fds: openFdCount(),
    hostMappings: liveHostMappingCount(),
    fileMappings,
    free: huge ? hugeFree() : undefined,
  };
}

/** HugePages_Free of /proc/meminfo. */
export function hugeFree(): number {
  const line = readTextFile("/proc/meminfo").split("\n").find((l) =>
    l.startsWith("HugePages_Free:")
  );
  return Number(line?.split(/\s+/)[1] ?? 0);
}

/**
 * What the guest sees (active regions) against the KVM slots, after a
 * successful change: every active region inside one slot with its
 * writability and host addresses (a transaction may have merged adjacent
 * regions into one slot), and no slot beyond them but those starting at
 * `except` (slots of no region, such as a probe guest's code page).
 */
export function checkSlotsMatchRegions(
  manager: GuestMemoryManager,
  kvm: KvmPartition,
  where: string,
  except: readonly bigint[] = [],
) {
  const internals = managerInternals(manager);
  const regions = internals.regionManager.regionInfos().filter((r) => r.active);
  let covered = 0n;
  for (const region of regions) {
    const s = kvm.slotAt(region.range.start);
    const what = `kvm slots against the active regions, ${where}: ${region.range}`;
    assert.ok(s !== undefined && s.gpa + s.size >= region.range.end, `${what}: no slot`);
    assert.equal(s.readonly, region.mapParams?.writable === false, `${what}: writability`);
    assert.equal(
      s.hostAddress + (region.range.start - s.gpa),
      internals.va.base + region.range.start,
      `${what}: host address`,
    );
    covered += region.range.len;
  }
  const slots = kvm.slots().reduce((sum, s) => except.includes(s.gpa) ? sum : sum + s.size, 0n);
  assert.equal(slots, covered, `kvm slots against the active regions, ${where}: slots beyond them`);
}

/** The whole observable state of a built manager with a KVM partition. */
export function managerState(manager: GuestMemoryManager, kvm: KvmPartition): unknown {
  const va = managerInternals(manager).va;
  return {
    inspect: manager.inspect(),
    slots: slotState(kvm),
    protections: vaProtections(va.base, va.size).map((p) =>
      `${new MemoryRange(p.start, p.end)} ${p.perms}`
    ),
    process: processState(),
  };
}
