/**
 * Hugetlb-backed builds while the process receives signals at about 1 kHz,
 * for the EINTR test. Run as a script in a process of its own:
 * `deno run --allow-ffi --allow-run signal_storm.ts <builds> <pages>` builds
 * and disposes `<builds>` guests of `<pages>` 2 MiB hugepages with a
 * `SIGUSR1` listener installed and a shell sending it `SIGUSR1` every
 * millisecond, then prints a {@linkcode StormResult} as JSON.
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
import { MemoryLayout } from "../../layout/memory_layout.ts";

/** What a storm run reports. */
export interface StormResult {
  /** Guests built (and disposed). */
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
export async function buildsUnderSignalStorm(builds: number, pages: number): Promise<StormResult> {
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
    const layout = MemoryLayout.fromGaps(BigInt(pages) * HP, []);
    const start = signals;
    for (let i = 0; i < builds; i++) {
      try {
        using manager = new GuestMemoryBuilder().hugepages().build(layout);
        manager.client().guestMemory().writeU32(0x1000n, i);
        built++;
      } catch (error) {
        failures.push(`${error}: ${(error as Error).cause}`);
      }
      await delay(0); // lets the listener count
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
  const result = await buildsUnderSignalStorm(
    Number(Deno.args[0] ?? "100"),
    Number(Deno.args[1] ?? "32"),
  );
  console.log(JSON.stringify(result));
}
