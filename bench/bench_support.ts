/**
 * Helpers shared by the benchmark files (not part of the library), above
 * all the sampler that times our side.
 *
 * The sampler. `deno bench --json` reports only means and extremes, and
 * means on a shared host are ruled by outliers, so the bench files time
 * themselves: {@linkcode bench} runs an operation in samples, each sample a
 * batch of operations between two `performance.now()` calls (the batch is
 * doubled until the fastest of three samples takes at least 50 µs, so the clock's resolution
 * and its ~70 ns cost do not matter), and prints one JSON line per
 * benchmark on stdout: `{"name", "batch", "median", "p10", "samples"}` with
 * the ns per operation of every sample; bench/baseline.c prints the same
 * shape for C. bench/run.ts runs each bench file as a script
 * (`deno run ... bench/<file>.ts`) and pairs its lines with the baseline's.
 *
 * @module
 */

import { KvmSystem } from "../kvm.ts";
import {
  type DeviceMemoryControl,
  GuestMemoryBuilder,
  type GuestMemoryManager,
  MemoryLayout,
  MemoryRange,
  SharedMemoryBacking,
} from "../mod.ts";
import { quantile } from "./stats.ts";

/** Whether /dev/kvm can be opened read-write (KVM benchmarks are skipped otherwise). */
export function kvmAvailable(): boolean {
  try {
    KvmSystem.open()[Symbol.dispose]();
    return true;
  } catch {
    return false;
  }
}

/** A KVM benchmark's `ignore` value: skipped without KVM, with a note on stderr. */
export function skipWithoutKvm(what: string): boolean {
  if (kvmAvailable()) return false;
  console.error(`skipping ${what}: /dev/kvm is not available`);
  return true;
}

/** 1 MiB. */
export const MIB = 1n << 20n;

/** 1 GiB. */
export const GIB = 1n << 30n;

/**
 * The regions x86 legacy support lets `RamVisibilityControl` flip in the
 * first MiB: the VGA window, twelve 16 KiB PAM pieces and the 64 KiB BIOS
 * piece.
 */
export function pamRanges(): MemoryRange[] {
  const ranges = [new MemoryRange(0xa0000n, 0xc0000n)];
  for (let start = 0xc0000n; start < 0xf0000n; start += 0x4000n) {
    ranges.push(new MemoryRange(start, start + 0x4000n));
  }
  ranges.push(new MemoryRange(0xf0000n, 0x100000n));
  return ranges;
}

/** A sample lasts at least this long (ns), unless its batch is fixed. */
export const MIN_SAMPLE_NS = 50_000;

/** How {@linkcode bench} samples an operation. */
export interface BenchOptions {
  /** Operations per sample; default: calibrated to {@linkcode MIN_SAMPLE_NS}. */
  readonly batch?: number;
  /** At most this many samples (default 300). */
  readonly samples?: number;
  /** At least this many samples, whatever the time (default 10). */
  readonly minSamples?: number;
  /** Stop after this long (ms) once `minSamples` are taken (default 400). */
  readonly budgetMs?: number;
  /** Run the operation untimed for this long (ms) first (default 20; at least once). */
  readonly warmupMs?: number;
  /** One call of `fn` performs this many operations (default 1): figures are divided by it. */
  readonly opsPerCall?: number;
  /**
   * `fn` times itself and returns the ns it measured (for operations whose
   * preparation must be left out); samples then add up those figures.
   */
  readonly selfTimed?: boolean;
}

/** One benchmark's figures, as printed (ns per operation). */
export interface BenchResult {
  readonly name: string;
  readonly batch: number;
  readonly median: number;
  readonly p10: number;
  readonly samples: readonly number[];
}

/**
 * Warm-up of the first KVM slot benchmark of a bench process, in ms. For
 * the first second or two of a Deno process, V8's compiler and garbage
 * collector threads map and unmap memory on the other core, and on this
 * nested host a thread of the same process doing that makes every
 * `KVM_SET_USER_MEMORY_REGION` slower (C, 28 slot pairs: 0.70 ms alone,
 * 1.2-1.4 ms beside a thread doing mmap+munmap; a PAM flip from Deno: 3.5
 * ms in its first 400 flips, 0.75 ms after, and 0.75 ms from the start
 * pinned to one core with `taskset -c 0`). Without this, each short round
 * would time mostly that start-up. The later slot benchmarks of a process
 * warm up for {@linkcode KVM_ROW_WARMUP_MS}: their code is compiled on
 * another thread meanwhile, with the same effect.
 */
export const KVM_WARMUP_MS = 2000;

/** Warm-up of every later KVM slot benchmark of a bench process, in ms. */
export const KVM_ROW_WARMUP_MS = 1000;

/** Results land here, so the JIT cannot drop the operations. */
export let sink: unknown;

/** Median and 10th percentile of per-operation figures. */
export function summarize(
  name: string,
  batch: number,
  samples: readonly number[],
): BenchResult {
  const sorted = [...samples].sort((a, b) => a - b);
  return { name, batch, median: quantile(sorted, 0.5), p10: quantile(sorted, 0.1), samples };
}

/** Prints a result line for bench/run.ts. */
export function emit(result: BenchResult): void {
  const round = (ns: number) => Number(ns.toPrecision(6));
  console.log(JSON.stringify({
    ...result,
    median: round(result.median),
    p10: round(result.p10),
    samples: result.samples.map(round),
  }));
}

/** Prints a line saying that benchmark `name` did not run, and why. */
export function skip(name: string, reason: string): void {
  console.log(JSON.stringify({ name, skipped: reason }));
}

/**
 * Samples `fn` (see the module comment) and prints the result line.
 *
 * @param name The benchmark's name, as bench/run.ts's rows refer to it.
 * @param fn One operation (or `opsPerCall` of them); with `selfTimed`, returns its own ns.
 */
export function bench(name: string, fn: () => unknown, options: BenchOptions = {}): BenchResult {
  const per = options.opsPerCall ?? 1;
  const timed = options.selfTimed ?? false;
  const timeBatch = (n: number): number => {
    if (timed) {
      let total = 0;
      for (let i = 0; i < n; i++) total += fn() as number;
      return total;
    }
    const t0 = performance.now();
    for (let i = 0; i < n; i++) sink = fn();
    return (performance.now() - t0) * 1e6;
  };
  let batch = options.batch ?? 1;
  const warmupEnd = performance.now() + (options.warmupMs ?? 20);
  do timeBatch(batch); while (performance.now() < warmupEnd);
  if (options.batch === undefined && !timed) {
    // The fastest of three tries, so that one slow try (a GC, a JIT tier-up) does not decide.
    const fastest = () => Math.min(timeBatch(batch), timeBatch(batch), timeBatch(batch));
    while (fastest() < MIN_SAMPLE_NS && batch < 1 << 30) batch *= 2;
  }
  const max = options.samples ?? 300;
  const min = Math.min(max, options.minSamples ?? 10);
  const deadline = performance.now() + (options.budgetMs ?? 400);
  const samples: number[] = [];
  while (samples.length < max && (samples.length < min || performance.now() < deadline)) {
    samples.push(timeBatch(batch) / (batch * per));
  }
  const result = summarize(name, batch, samples);
  emit(result);
  return result;
}

/** 4 KiB. */
export const PAGE = 0x1000n;

/** A guest of 1 MiB of RAM with `count` one-page device regions right above it. */
export interface DeviceGuest extends Disposable {
  readonly manager: GuestMemoryManager;
  /** Guest address of device region `i`: 1 MiB + `i` pages. */
  gpa(i: number): bigint;
  /** Whether region `i` is mapped writable (see {@linkcode deviceGuest}). */
  writable(i: number): boolean;
  /** The regions' controls, lowest address first. */
  readonly controls: readonly DeviceMemoryControl[];
}

/**
 * Builds a {@linkcode DeviceGuest}: RAM at [0, 1 MiB), then `count`
 * contiguous one-page device regions in the MMIO gap, region `i` backed by
 * page `i` of one shared memory object and mapped into the guest. With
 * `alternate`, even regions are read-only and odd ones writable, so no two
 * neighbours (nor the RAM and region 0) could share a KVM slot or a host
 * VMA; without, all are writable and their host mappings merge into few
 * VMAs (needed beyond about 60,000 regions: vm.max_map_count is 65,530).
 */
export function deviceGuest(count: number, alternate: boolean): DeviceGuest {
  const ram = new MemoryRange(0n, MIB);
  const gap = new MemoryRange(MIB, MIB + BigInt(count) * PAGE);
  const manager = new GuestMemoryBuilder().build(MemoryLayout.fromRanges([ram], [gap]));
  const backing = SharedMemoryBacking.create(BigInt(count) * PAGE, { name: "bench-devices" });
  const devices = manager.deviceMemoryMapper();
  const gpa = (i: number) => MIB + BigInt(i) * PAGE;
  const writable = (i: number) => !alternate || (i & 1) === 1;
  const controls: DeviceMemoryControl[] = [];
  for (let i = 0; i < count; i++) {
    const { control, region } = devices.newRegion(PAGE, `dev${i}`);
    region.map(0n, backing, BigInt(i) * PAGE, PAGE, true);
    control.mapToGuest(gpa(i), writable(i));
    controls.push(control);
  }
  return {
    manager,
    gpa,
    writable,
    controls,
    [Symbol.dispose]() {
      manager[Symbol.dispose]();
      backing[Symbol.dispose]();
    },
  };
}
