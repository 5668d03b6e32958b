/**
 * Hugetlb-backed builds while the process receives signals at about 1 kHz,
 * for the EINTR test. Run as a script in a process of its own:
 * `deno run --allow-ffi --allow-run signal_storm.ts <builds> <pages>` builds
 * and disposes `<builds>` guests of `<pages>` 2 MiB hugepages with a
 * `SIGUSR1` listener installed and a shell sending it `SIGUSR1` every
 * millisecond, then prints a {@linkcode StormResult} as JSON.
 *
 * `signal_storm.ts <mode> <rounds>` runs the other interruptible calls
 * under the same storm, each round with a KVM partition attached:
 * `prefetch` (64 MiB built with `prefetchRam`: `KVM_PRE_FAULT_MEMORY` or
 * `MADV_POPULATE_WRITE` at attach), `pin` (`pinMappings`: `mlock` at
 * attach) and `slots` (x86 legacy RAM: 42 RAM visibility flips, each a
 * `KVM_SET_USER_MEMORY_REGION` or two), `dirty` (dirty tracking and a
 * snapshot of 64 MiB: `KVM_GET_DIRTY_LOG`/`KVM_CLEAR_DIRTY_LOG`, slot
 * re-creation with `KVM_MEM_LOG_DIRTY_PAGES`, `copy_file_range`) and
 * `parallelPrefetch` (`manager.prefetch()` of 64 MiB on two threads of
 * Deno's blocking pool, `madvise` again on this thread for a part that
 * failed). Warnings count as failures (a failed prefetch is only a warning).
 *
 * Why a process of its own: the kernel hands a signal sent to a process to
 * its main thread whenever that thread can take it, and `deno test` runs
 * tests on another thread, so there the builds would never be interrupted.
 * Under `deno run`, as in a VMM, JavaScript runs on the main thread.
 *
 * Why 64 MiB guests rather than 4 MiB: hugetlbfs' fallocate stops with
 * EINTR when a signal is pending before one of its pages, so the longer it
 * runs, the likelier a signal meets it. Without the retry, 100 builds of
 * 4 MiB failed 0-2 times here, 100 builds of 64 MiB 99-100 times.
 */
import { GuestMemoryBuilder } from "../../builder.ts";
import { setWarningHandler } from "../../diagnostics/warnings.ts";
import { KvmPartition } from "../../kvm/kvm_partition.ts";
import { MemoryLayout } from "../../layout/memory_layout.ts";
import { MemoryRange } from "../../layout/memory_range.ts";
import { Vtl } from "../../manager/vtl.ts";
import { RamVisibility } from "../../regions/ram_visibility_control.ts";
import { GuestRamSnapshot } from "../../snapshot/guest_ram_snapshot.ts";

/** What a storm run reports. */
export interface StormResult {
  /** Rounds that succeeded (guests built and disposed). */
  readonly built: number;
  /** Each failed build as `<error>: <cause>`. */
  readonly failures: string[];
  /** Turns of the event loop in which the listener saw signals, during the builds. */
  readonly signalTurns: number;
}

const HP = 2n << 20n;

/** Resolves after `ms` milliseconds. */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs `builds` builds of `pages` hugepages under the storm. */
export function buildsUnderSignalStorm(builds: number, pages: number): Promise<StormResult> {
  const layout = MemoryLayout.fromGaps(BigInt(pages) * HP, []);
  return underSignalStorm(builds, (i) => {
    using manager = new GuestMemoryBuilder().hugepages().build(layout);
    manager.client().guestMemory().writeU32(0x1000n, i);
  });
}

/** The rounds of the other modes (see the module documentation). */
export const STORM_MODES: Readonly<Record<string, (round: number) => void | Promise<void>>> = {
  prefetch: (round) => {
    using manager = new GuestMemoryBuilder().prefetchRam(true).build(
      MemoryLayout.fromGaps(64n << 20n, []),
    );
    using partition = KvmPartition.create();
    using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
    manager.client().guestMemory().writeU32(0x1000n, round);
  },
  pin: (round) => {
    using manager = new GuestMemoryBuilder().pinMappings(true).build(
      MemoryLayout.fromGaps(64n << 20n, []),
    );
    using partition = KvmPartition.create();
    using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
    manager.client().guestMemory().writeU32(0x1000n, round);
  },
  dirty: (round) => {
    using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
      MemoryLayout.fromGaps(64n << 20n, []),
    );
    using partition = KvmPartition.create();
    using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
    const memory = manager.client().guestMemory();
    const tracker = manager.dirtyTracker();
    tracker.start();
    using snapshot = GuestRamSnapshot.take(manager);
    for (let page = 0; page < 64; page++) memory.writeU32(BigInt(page) << 20n, round + 1);
    if (tracker.dirtyPages().length !== 64) throw new RangeError("dirty pages lost");
    if (snapshot.restoreDirty(manager) !== 64) throw new RangeError("restore copied otherwise");
    snapshot.restore(manager);
    tracker.stop();
  },
  parallelPrefetch: async (round) => {
    using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(64n << 20n, []));
    await manager.prefetch({ threads: 2 });
    manager.client().guestMemory().writeU32(0x1000n, round);
  },
  slots: () => {
    using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
      MemoryLayout.fromGaps(8n << 20n, []),
    );
    using partition = KvmPartition.create();
    using _attachment = manager.attachPartition(Vtl.Vtl0, partition);
    const control = manager.ramVisibilityControl();
    for (let piece = 0xc0000n; piece < 0xf0000n; piece += 0x4000n) {
      const range = new MemoryRange(piece, piece + 0x4000n);
      control.setRamVisibility(range, RamVisibility.ReadOnly);
      control.setRamVisibility(range, RamVisibility.Unmapped);
      control.setRamVisibility(range, RamVisibility.ReadWrite);
    }
  },
};

/** Runs `rounds` rounds of `round` under the storm; failures and warnings are reported. */
export async function underSignalStorm(
  rounds: number,
  round: (i: number) => void | Promise<void>,
): Promise<StormResult> {
  let signals = 0;
  const count = () => signals++;
  Deno.addSignalListener("SIGUSR1", count);
  // At most 20 s; `read -t` waits a millisecond without forking.
  const storm = new Deno.Command("bash", {
    args: [
      "-c",
      `exec 9<> <(:); end=$((SECONDS + 20)); while [ $SECONDS -lt $end ]; do kill -USR1 ${Deno.pid}; read -t 0.001 -u 9; done`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const failures: string[] = [];
  let built = 0;
  let signalTurns = 0;
  try {
    await delay(50);
    const start = signals;
    const previous = setWarningHandler((w) => failures.push(`warning ${w.message}: ${w.cause}`));
    try {
      for (let i = 0; i < rounds; i++) {
        try {
          await round(i);
          built++;
        } catch (error) {
          failures.push(`${error}: ${(error as Error).cause}`);
        }
        await delay(0); // lets the listener count
      }
    } finally {
      setWarningHandler(previous);
    }
    signalTurns = signals - start;
  } finally {
    storm.kill("SIGKILL");
    await storm.status;
    // Every signal sent must have arrived before the listener goes.
    for (let seen = -1; seen !== signals;) {
      seen = signals;
      await delay(100);
    }
    Deno.removeSignalListener("SIGUSR1", count);
  }
  return { built, failures, signalTurns };
}

if (import.meta.main) {
  const mode = STORM_MODES[Deno.args[0]];
  const result = mode === undefined
    ? await buildsUnderSignalStorm(Number(Deno.args[0] ?? "100"), Number(Deno.args[1] ?? "32"))
    : await underSignalStorm(Number(Deno.args[1] ?? "20"), mode);
  console.log(JSON.stringify(result));
}
