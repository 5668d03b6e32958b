/**
 * `deno task bench`: builds the C baseline (bench/baseline.c, `cc -O2 -Wall
 * -Wextra`, into the git-ignored bench/.build/), runs the bench files and
 * the baseline in interleaved rounds, and prints one table: for each
 * benchmark our median and 10th percentile time per operation, the same for
 * C (or for the reference it is compared with), the ratio, the target and
 * whether it is met. `--json FILE` writes every round's figures to a file.
 *
 * Sampling. Both sides time themselves in samples of a small batch of
 * operations (at least 50 µs per sample; bench/bench_support.ts for ours,
 * clock_gettime in bench/baseline.c for C); a sample's figure is its time /
 * batch, a run's figure is the median of its samples. The host is shared
 * and noisy, so rounds are many and short: each round runs one bench file
 * (`deno run`) and right after it the C benchmarks it is compared with (C
 * first in odd rounds, to cancel drift).
 *
 * Statistics in the table: "median" is the median over rounds of each
 * round's median; "p10" is the 10th percentile of all samples of all rounds
 * (the fast end: the cost with little of the host's noise); "ratio" is the
 * median over rounds of the per-round ratio (reference time / our time, so
 * > 1 means we are faster; for scaling rows, large-case time / small-case
 * time). Targets are judged on the medians only.
 *
 * Rows whose reference is "(ours)" compare two of our own benchmarks, from
 * the same process (a plain DataView, 13 separate calls, the main thread).
 * A benchmark that cannot run (no /dev/kvm, an API not in the library yet)
 * reports itself as skipped, and the table says why.
 *
 * Usage: deno task bench [--runs N] [--prefetch-runs N] [--skip-prefetch]
 *                        [--only REGEX] [--json FILE] [--strict]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { quantile } from "./stats.ts";

const HERE = new URL(".", import.meta.url).pathname;
const BUILD_DIR = `${HERE}.build`;
const BASELINE = `${BUILD_DIR}/baseline`;

/** Permissions of the bench subprocesses (FFI does all the work; no /proc access). */
const BENCH_PERMISSIONS = ["--allow-ffi", "--allow-read", "--allow-write", "--allow-env"];

/** A C benchmark: its name, or name, batch and samples for the baseline. */
type CBench = string | readonly [string, number, number];

/** A bench file and the C baseline benchmarks its figures are compared with. */
interface BenchFile {
  readonly file: string;
  readonly c: readonly CBench[];
  /** Take part in at most this many rounds (slow or steady benchmarks need fewer). */
  readonly maxRounds?: number;
  /** Only in the first `--prefetch-runs` rounds. */
  readonly prefetch?: boolean;
}

const FILES: readonly BenchFile[] = [
  { file: "slot_map_bench.ts", c: ["slot_map"] },
  { file: "pam_flip_bench.ts", c: ["pam_flip", "pam_flip_ioctl"] },
  { file: "seabios_pam_bench.ts", c: ["seabios_pam"] },
  { file: "slot_merge_bench.ts", c: [], maxRounds: 5 },
  {
    file: "guest_memory_bench.ts",
    c: ["read8", "copy_in_4k", "copy_out_4k", "copy_in_1m", "copy_out_1m"],
    maxRounds: 9,
  },
  { file: "first_access_bench.ts", c: [], maxRounds: 9 },
  { file: "region_manager_bench.ts", c: [], maxRounds: 5 },
  {
    file: "kvm_scaling_bench.ts",
    c: ["kvm_scale_10", "kvm_scale_1000", "kvm_scale_10000", "kvm_scale_30000"],
    maxRounds: 9,
  },
  { file: "kvm_attach_bench.ts", c: [["kvm_attach_detach_10000", 1, 5]], maxRounds: 5 },
  { file: "worker_bench.ts", c: [], maxRounds: 9 },
  {
    file: "snapshot_bench.ts",
    c: [["dirty_log_read_1g", 1, 100], ["restore_dirty_1000", 1, 30], ["snapshot_1g", 1, 3]],
    maxRounds: 3,
  },
  {
    file: "prefetch_bench.ts",
    c: ["prefetch_shared", "prefetch_shared_kvm", "prefetch_private", "prefetch_private_kvm"],
    prefetch: true,
  },
];

/** A target: a minimum ratio, a maximum ratio (scaling) or a maximum median time. */
type Target =
  | { readonly kind: "minRatio"; readonly value: number }
  | { readonly kind: "maxRatio"; readonly value: number }
  | { readonly kind: "maxNs"; readonly value: number };

/** Which side a benchmark name refers to. */
type Side = "ours" | "c";

/** A table row. */
type RowSpec =
  /** Our benchmark against a reference: C, or another of ours (`side: "ours"`). */
  | {
    readonly kind: "compare";
    readonly label: string;
    readonly ours: string;
    readonly ref: string;
    readonly side: Side;
    readonly target?: Target;
  }
  /** Our benchmark alone (an absolute target). */
  | {
    readonly kind: "single";
    readonly label: string;
    readonly ours: string;
    readonly target?: Target;
  }
  /** Per round, `hi` time / `lo` time on one side. */
  | {
    readonly kind: "scaling";
    readonly label: string;
    readonly side: Side;
    readonly lo: string;
    readonly hi: string;
    readonly target?: Target;
  };

const minRatio = (value: number): Target => ({ kind: "minRatio", value });
const maxRatio = (value: number): Target => ({ kind: "maxRatio", value });
const maxNs = (value: number): Target => ({ kind: "maxNs", value });

function compare(
  label: string,
  ours: string,
  ref: string,
  target?: Target,
  side: Side = "c",
): RowSpec {
  return { kind: "compare", label, ours, ref, side, target };
}

/** Table rows in the order given, then sorted by their section number (stable). */
const ROWS_AS_WRITTEN: readonly RowSpec[] = [
  compare("1. slot map cycle, 2 MiB region (map+unmap)", "slot_map", "slot_map", minRatio(0.9)),
  compare("2. PAM flip, 14 regions RW->RO->RW", "pam_flip", "pam_flip", minRatio(0.9)),
  compare(
    "2b. SeaBIOS POST PAM sequence (reset + 4 writes, 38 changes)",
    "seabios_pam",
    "seabios_pam",
    minRatio(0.9),
  ),
  compare(
    "2. PAM flip vs C slot ioctls only (28 pairs)",
    "pam_flip",
    "pam_flip_ioctl",
    minRatio(0.95),
  ),
  compare(
    "2. batched PAM flip, 13 pieces, vs 13 calls (ours)",
    "pam_flip13_batched",
    "pam_flip13_separate",
    minRatio(2),
    "ours",
  ),
  compare(
    "2c. batched flip, merged slots vs a slot per piece, 16 MiB guest (ours)",
    "merge_batched_16m",
    "merge_batched_16m_off",
    undefined,
    "ours",
  ),
  compare(
    "2c. batched flip, merged slots vs a slot per piece, 4 GiB guest (ours)",
    "merge_batched_4g",
    "merge_batched_4g_off",
    undefined,
    "ours",
  ),
  compare(
    "2c. batched flip then 13 separate flips, merged vs a slot per piece (ours)",
    "merge_mixed_16m",
    "merge_mixed_16m_off",
    undefined,
    "ours",
  ),
  compare("4. GuestMemory 8-byte read (bigint gpa)", "read8", "read8", maxNs(200)),
  compare("4. GuestMemory 8-byte read (number gpa)", "read8_number", "read8", maxNs(200)),
  compare(
    "4. 8-byte read (number) vs plain DataView (ours)",
    "read8_number",
    "read8_dataview",
    minRatio(0.5),
    "ours",
  ),
  compare("4. copy 4 KiB into guest", "copy_in_4k", "copy_in_4k", minRatio(0.8)),
  compare("4. copy 4 KiB out of guest", "copy_out_4k", "copy_out_4k", minRatio(0.8)),
  compare("4. copy 1 MiB into guest", "copy_in_1m", "copy_in_1m", minRatio(0.8)),
  compare("4. copy 1 MiB out of guest", "copy_out_1m", "copy_out_1m", minRatio(0.8)),
  ...[16, 1000, 10000, 100000].flatMap((n): RowSpec[] => {
    const count = n.toLocaleString("en-US");
    return [
      {
        kind: "single",
        label: `9. first access after a change, ${count} mappings`,
        ours: `first_access_${n}`,
        target: n === 100000 ? maxNs(5000) : undefined,
      },
      {
        kind: "single",
        label: `9.   the change alone, ${count} mappings`,
        ours: `region_change_${n}`,
      },
    ];
  }),
  {
    kind: "single",
    label: "9. first write into a fresh 1 TiB guest",
    ours: "first_write_1tib",
    target: maxNs(50000),
  },
  ...[10, 1000, 10000, 30000].map((n) =>
    compare(
      `7. KVM attached: unmap+map, ${n.toLocaleString("en-US")} regions`,
      `kvm_scale_${n}`,
      `kvm_scale_${n}`,
    )
  ),
  {
    kind: "scaling",
    label: "7. KVM attached scaling (ours): 30,000 vs 10 regions",
    side: "ours",
    lo: "kvm_scale_10",
    hi: "kvm_scale_30000",
    target: maxRatio(1.2),
  },
  {
    kind: "scaling",
    label: "7. KVM attached scaling (C): 30,000 vs 10 regions",
    side: "c",
    lo: "kvm_scale_10",
    hi: "kvm_scale_30000",
  },
  compare("8. attach KVM partition, 10,000 regions", "kvm_attach_10000", "kvm_attach_10000"),
  compare(
    "8. detach KVM partition, 10,000 regions",
    "kvm_detach_10000",
    "kvm_detach_10000",
    minRatio(1 / 1.2),
  ),
  ...(["backed", "bare"] as const).flatMap((group): RowSpec[] => {
    const what = group === "backed" ? "backed" : "without backing";
    return [
      ...[10, 100, 1000, 10000].map((n): RowSpec => ({
        kind: "single",
        label: `3. region map/unmap pair, ${n.toLocaleString("en-US")} regions (${what})`,
        ours: `region_pair_${group}_${n}`,
      })),
      {
        kind: "scaling",
        label: `3. scaling (${what}): 10,000 vs 10 regions`,
        side: "ours",
        lo: `region_pair_${group}_10`,
        hi: `region_pair_${group}_10000`,
        target: maxRatio(2),
      },
    ];
  }),
  compare(
    "6. 8-byte read loop: Worker vs main thread (ours)",
    "read8_worker",
    "read8_main",
    minRatio(0.5),
    "ours",
  ),
  compare("6. copy 1 MiB out of guest in a Worker", "copy_out_1m_worker", "copy_out_1m"),
  compare(
    "6. region change, Worker reader idle vs none (ours)",
    "region_change_shared_idle",
    "region_change_unshared",
    undefined,
    "ours",
  ),
  compare(
    "6. region change, Worker reading vs none (ours)",
    "region_change_shared_busy",
    "region_change_unshared",
    undefined,
    "ours",
  ),
  compare(
    "5. build+prefetch 1 GiB shared vs 1-thread mmap+populate",
    "prefetch_shared",
    "prefetch_shared",
  ),
  compare(
    "5. build+prefetch() on all cores, 1 GiB shared vs 1-thread mmap+populate",
    "prefetch_shared_parallel",
    "prefetch_shared",
    minRatio(1.6),
  ),
  compare(
    "5. build+prefetch 1 GiB shared vs same sequence",
    "prefetch_shared",
    "prefetch_shared_kvm",
  ),
  compare(
    "5. build+prefetch 1 GiB private vs 1-thread mmap+populate",
    "prefetch_private",
    "prefetch_private",
  ),
  compare(
    "5. build+prefetch() on all cores, 1 GiB private vs 1-thread mmap+populate",
    "prefetch_private_parallel",
    "prefetch_private",
    minRatio(1.6),
  ),
  compare(
    "5. build+prefetch 1 GiB private vs same sequence",
    "prefetch_private",
    "prefetch_private_kvm",
  ),
  compare(
    "10. dirty-log read, 1 GiB slot (nothing dirty)",
    "dirty_log_read_1g",
    "dirty_log_read_1g",
  ),
  compare(
    "10. incremental restore, 1,000 pages of 1 GiB vs C memcpy",
    "restore_dirty_1000",
    "restore_dirty_1000",
    minRatio(1 / 1.5),
  ),
  compare(
    "10. incremental restore vs full restore of 1 GiB (ours)",
    "restore_dirty_1000",
    "restore_full_1g",
    minRatio(20),
    "ours",
  ),
  compare("10. full snapshot of 1 GiB vs C copy_file_range", "snapshot_1g", "snapshot_1g"),
];

const section = (row: RowSpec) => Number(/^(\d+)\./.exec(row.label)?.[1] ?? 99);
const ROWS = [...ROWS_AS_WRITTEN].sort((a, b) => section(a) - section(b));

/** One benchmark's line, from a bench file or the baseline (ns per operation). */
interface BenchLine {
  readonly name: string;
  readonly batch?: number;
  readonly median?: number;
  readonly p10?: number;
  readonly samples?: readonly number[];
  /** Set instead of the figures when the benchmark did not run: why. */
  readonly skipped?: string;
}

/** What one round measured, by benchmark name, on each side. */
interface Round {
  readonly ours: Map<string, BenchLine>;
  readonly c: Map<string, BenchLine>;
}

function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  return quantile([...values].sort((a, b) => a - b), 0.5);
}

function formatNs(ns: number | undefined): string {
  if (ns === undefined || !Number.isFinite(ns)) return "-";
  if (ns < 1e3) return `${ns.toFixed(1)} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(2)} µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(2)} ms`;
  return `${(ns / 1e9).toFixed(3)} s`;
}

function formatTarget(target: Target | undefined): string {
  if (target === undefined) return "-";
  switch (target.kind) {
    case "minRatio":
      return `>= ${Number(target.value.toFixed(3))}`;
    case "maxRatio":
      return `<= ${target.value}x`;
    case "maxNs":
      return `< ${formatNs(target.value)}`;
  }
}

/** A bench process running longer than this is killed (a hang fails the run, not the host). */
const PROCESS_TIMEOUT_MS = 10 * 60e3;

async function run(cmd: string, args: string[], what: string): Promise<string> {
  const output = await new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(PROCESS_TIMEOUT_MS),
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  if (!output.success) {
    const stderr = new TextDecoder().decode(output.stderr);
    throw new Error(`${what} failed (exit ${output.code}):\n${stderr}${stdout}`);
  }
  return stdout;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** The JSON lines of a bench process's stdout into `into` (other lines are ignored). */
function collect(stdout: string, into: Map<string, BenchLine>): void {
  for (const line of stdout.split("\n")) {
    if (!line.startsWith("{")) continue;
    const result = JSON.parse(line) as BenchLine;
    into.set(result.name, result);
  }
}

async function runOurs(file: BenchFile, round: Round): Promise<void> {
  const stdout = await run(
    Deno.execPath(),
    ["run", ...BENCH_PERMISSIONS, `${HERE}${file.file}`],
    `deno run bench/${file.file}`,
  );
  collect(stdout, round.ours);
}

async function runBaseline(benches: readonly CBench[], round: Round): Promise<void> {
  for (const bench of benches) {
    const args = typeof bench === "string" ? [bench] : bench.map(String);
    collect(await run(BASELINE, args, `bench/.build/baseline ${args.join(" ")}`), round.c);
  }
}

function evaluate(target: Target | undefined, value: number | undefined): boolean | undefined {
  if (target === undefined || value === undefined) return undefined;
  switch (target.kind) {
    case "minRatio":
      return value >= target.value;
    case "maxRatio":
      return value <= target.value;
    case "maxNs":
      return value < target.value;
  }
}

/** Medians over rounds and pooled 10th percentiles of one benchmark. */
interface Figures {
  readonly rounds: number[];
  readonly median: number | undefined;
  readonly p10: number | undefined;
}

function figures(lines: readonly BenchLine[]): Figures {
  const rounds = lines.map((l) => l.median!);
  const pooled = lines.flatMap((l) => l.samples ?? []).sort((a, b) => a - b);
  return {
    rounds,
    median: median(rounds),
    p10: pooled.length === 0 ? undefined : quantile(pooled, 0.1),
  };
}

/** A row's results, for the table and the JSON output. */
interface RowResult {
  readonly spec: RowSpec;
  readonly ours?: Figures;
  readonly ref?: Figures;
  readonly ratioRounds: number[];
  readonly ratio: number | undefined;
  /** The figure the target is judged on. */
  readonly judged: number | undefined;
  readonly pass: boolean | undefined;
  readonly skipped?: string;
}

const measured = (line: BenchLine | undefined): line is BenchLine =>
  line !== undefined && line.skipped === undefined && line.median !== undefined;

function side(round: Round, s: Side): Map<string, BenchLine> {
  return s === "ours" ? round.ours : round.c;
}

function evaluateRow(spec: RowSpec, rounds: readonly Round[]): RowResult | undefined {
  const names: [Side, string][] = spec.kind === "compare"
    ? [["ours", spec.ours], [spec.side, spec.ref]]
    : spec.kind === "single"
    ? [["ours", spec.ours]]
    : [[spec.side, spec.lo], [spec.side, spec.hi]];
  for (const [s, name] of names) {
    const skipped = rounds.map((r) => side(r, s).get(name)?.skipped).find((x) => x !== undefined);
    if (skipped !== undefined) {
      return {
        spec,
        ratioRounds: [],
        ratio: undefined,
        judged: undefined,
        pass: undefined,
        skipped,
      };
    }
  }
  const paired = rounds.filter((r) => names.every(([s, name]) => measured(side(r, s).get(name))));
  if (paired.length === 0) return undefined;
  const get = (s: Side, name: string) => paired.map((r) => side(r, s).get(name)!);
  const first = figures(get(names[0][0], names[0][1]));
  if (spec.kind === "single") {
    const judged = first.median;
    return {
      spec,
      ours: first,
      ratioRounds: [],
      ratio: undefined,
      judged,
      pass: evaluate(spec.target, judged),
    };
  }
  const second = figures(get(names[1][0], names[1][1]));
  // compare: reference / ours (> 1: we are faster); scaling: hi / lo. Same round, same index.
  const ratioRounds = first.rounds.map((a, i) => second.rounds[i] / a);
  const ratio = median(ratioRounds);
  const judged = spec.target?.kind === "maxNs" ? first.median : ratio;
  return {
    spec,
    ours: spec.kind === "compare" ? first : undefined,
    ref: spec.kind === "compare" ? second : undefined,
    ratioRounds,
    ratio,
    judged,
    pass: evaluate(spec.target, judged),
  };
}

function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((cell, i) => i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i])).join(
      "  ",
    );
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const row of rows) console.log(line(row));
}

const USAGE = `usage: deno task bench [options]
  --runs N           rounds (default 15, about 5 minutes here; some files take part in
                     fewer: GuestMemory, first access, KVM scaling and Workers in at most 9,
                     region scaling and KVM attach/detach in at most 5); figures are medians
                     over rounds
  --prefetch-runs N  rounds that include the slow 1 GiB prefetch benchmarks (default 5)
  --skip-prefetch    leave the prefetch benchmarks out
  --only REGEX       run only the bench files whose name matches
  --json FILE        also write the results, every round's samples included (*.bench.json
                     is git-ignored)
  --strict           exit 1 when a target is missed or a bench process failed`;

function positiveInt(value: string, option: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`${option} must be >= 1, got ${value}`);
  return n;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      runs: { type: "string", default: "15" },
      "prefetch-runs": { type: "string", default: "5" },
      only: { type: "string" },
      json: { type: "string" },
      "skip-prefetch": { type: "boolean", default: false },
      strict: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const runs = positiveInt(values.runs, "--runs");
  const prefetchRuns = values["skip-prefetch"]
    ? 0
    : Math.min(runs, positiveInt(values["prefetch-runs"], "--prefetch-runs"));
  const only = values.only === undefined ? undefined : new RegExp(values.only);

  console.error("building bench/.build/baseline (cc -O2 -Wall -Wextra)");
  await Deno.mkdir(BUILD_DIR, { recursive: true });
  await run(
    "cc",
    ["-O2", "-Wall", "-Wextra", "-o", BASELINE, `${HERE}baseline.c`],
    "cc -O2 bench/baseline.c",
  );

  const files: BenchFile[] = [];
  for (const file of FILES) {
    if (only !== undefined && !only.test(file.file)) continue;
    if (await exists(`${HERE}${file.file}`)) files.push(file);
    else console.error(`note: bench/${file.file} is missing; its figures are left out`);
  }

  const started = performance.now();
  const rounds: Round[] = [];
  /** Bench processes that failed: reported after the table, and a miss for --strict. */
  const failures: string[] = [];
  const attempt = async (what: string, step: () => Promise<void>) => {
    try {
      await step();
    } catch (error) {
      console.error(`${what}: ${error instanceof Error ? error.message : error}`);
      failures.push(
        `${what}: ${(error instanceof Error ? error.message : String(error)).split("\n")[0]}`,
      );
    }
  };
  for (let r = 0; r < runs; r++) {
    const round: Round = { ours: new Map(), c: new Map() };
    for (const file of files) {
      if (file.prefetch && r >= prefetchRuns) continue;
      if (file.maxRounds !== undefined && r >= file.maxRounds) continue;
      console.error(`round ${r + 1}/${runs}: bench/${file.file} and its C baseline`);
      const ours = () => attempt(`round ${r + 1}, bench/${file.file}`, () => runOurs(file, round));
      const c = () =>
        attempt(`round ${r + 1}, C for bench/${file.file}`, () => runBaseline(file.c, round));
      if (r % 2 === 0) {
        await ours();
        await c();
      } else {
        await c();
        await ours();
      }
    }
    rounds.push(round);
  }
  const minutes = (performance.now() - started) / 60e3;

  const results = ROWS.flatMap((spec) => evaluateRow(spec, rounds) ?? []);
  const verdict = (r: RowResult) =>
    r.skipped !== undefined ? "skip" : r.pass === undefined ? "-" : r.pass ? "pass" : "MISS";
  const tableRows = results.map((r) => {
    const scaling = r.spec.kind === "scaling";
    return [
      r.spec.label,
      scaling ? (r.ratio === undefined ? "-" : `${r.ratio.toFixed(3)}x`) : formatNs(r.ours?.median),
      formatNs(r.ours?.p10),
      formatNs(r.ref?.median),
      formatNs(r.ref?.p10),
      r.ratio === undefined || scaling ? "-" : r.ratio.toFixed(3),
      formatTarget(r.spec.target),
      verdict(r),
    ];
  });

  // `uname -r` rather than Deno.osRelease(), which would need --allow-sys.
  const kernel = (await run("uname", ["-r"], "uname -r")).trim();
  // Deno refuses /proc reads without --allow-all; lscpu-like, through grep.
  const cpu = (await run("grep", ["-m1", "model name", "/proc/cpuinfo"], "grep /proc/cpuinfo")
    .catch(() => "")).replace(/^model name\s*:\s*/, "").trim() || "unknown CPU";
  const cores = (await run("nproc", [], "nproc")).trim();
  console.log(
    `\nmembacking bench: Deno ${Deno.version.deno}, ${cpu} (${cores} cores), Linux ${kernel}, ` +
      `${runs} round(s)` +
      (prefetchRuns < runs ? ` (${prefetchRuns} with prefetch)` : "") +
      `, ${minutes.toFixed(1)} min`,
  );
  console.log(
    "median: median over rounds of each round's median time per operation; p10: 10th percentile\n" +
      "of all samples of all rounds. ref: the C baseline, or for rows marked (ours) our own\n" +
      "reference benchmark. ratio: median over rounds of (ref time / our time), > 1 = we are\n" +
      "faster; scaling rows show the median over rounds of (large case / small case) time.\n" +
      "Targets are judged on medians.\n",
  );
  printTable(
    ["benchmark", "ours", "ours p10", "ref", "ref p10", "ratio", "target", "result"],
    tableRows,
  );
  for (const r of results) {
    if (r.skipped !== undefined) console.log(`skipped: ${r.spec.label}: ${r.skipped}`);
  }

  for (const failure of failures) console.log(`FAILED: ${failure}`);

  const missed = results.filter((r) => r.pass === false).length;
  console.log(`\n${missed === 0 ? "all targets met" : `${missed} target(s) missed`}`);
  if (failures.length > 0) console.log(`${failures.length} bench process(es) failed`);

  if (values.json !== undefined) {
    const report = {
      date: new Date().toISOString(),
      deno: Deno.version.deno,
      cpu,
      kernel,
      rounds: runs,
      prefetchRounds: prefetchRuns,
      statistic: "per round: median of samples (each sample: batch time / batch); reported: " +
        "median over rounds, and the 10th percentile of all samples",
      ratioDefinition: "compare rows: reference ns / our ns, median of per-round ratios; " +
        "scaling rows: large-case ns / small-case ns, median of per-round ratios",
      rows: results.map((r) => ({
        label: r.spec.label,
        spec: r.spec,
        skipped: r.skipped ?? null,
        ours: r.ours ?? null,
        ref: r.ref ?? null,
        ratio: r.ratio ?? null,
        ratioRounds: r.ratioRounds,
        judged: r.judged ?? null,
        pass: r.pass ?? null,
      })),
      failures,
      perRound: rounds.map((round) => ({
        ours: Object.fromEntries(round.ours),
        c: Object.fromEntries(round.c),
      })),
    };
    await Deno.writeTextFile(values.json, JSON.stringify(report) + "\n");
    console.log(`wrote ${values.json}`);
  }
  return values.strict && missed + failures.length > 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
