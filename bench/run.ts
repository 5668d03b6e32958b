/**
 * `deno task bench`: builds the C baseline (bench/baseline.c, `cc -O2`, into
 * the git-ignored bench/.build/), runs the `deno bench` files and the
 * baseline, and prints one table: each benchmark, our time per operation,
 * the C time, the ratio (our throughput / C throughput), the target and
 * whether it is met, plus the region manager scaling ratio (10,000 vs 10
 * regions). `--json FILE` writes the same data to a file.
 *
 * Pairing and statistics. The machines are noisy (shared cores), so each
 * round runs one bench file and, right after it, the C benchmarks it is
 * compared with (C first in even rounds, to cancel drift). A round's figure
 * is the mean time per operation: `deno bench --json` reports no median,
 * only the mean over the iterations of a run (`avg`), and the C side uses
 * the same statistic (total time / operations over its batches). The table
 * shows, per benchmark, the median over rounds of our figure and of the C
 * figure, and the median over rounds of the per-round ratio (C time / our
 * time in that round); targets are judged on that. Beside it, the "best"
 * columns give the fastest single operation over all rounds on each side
 * (deno bench `min`, the baseline's `minNsPerOp`) and their ratio: the
 * intrinsic cost, with the host's noise removed. Every round's figures are
 * in the JSON output.
 *
 * Rows "vs the same syscalls via FFI" compare the full stack with a bench
 * in the same file that makes the same syscalls through the FFI layer alone
 * (same process, same VM): that ratio is the library's own overhead.
 *
 * Usage: deno task bench [--runs N] [--prefetch-runs N] [--json FILE]
 *                        [--skip-prefetch] [--strict]
 *
 * @module
 */

import { parseArgs } from "node:util";

const HERE = new URL(".", import.meta.url).pathname;
const BUILD_DIR = `${HERE}.build`;
const BASELINE = `${BUILD_DIR}/baseline`;

/** Permissions of the `deno bench` subprocess (FFI does all the work; no /proc access). */
const BENCH_PERMISSIONS = ["--allow-ffi", "--allow-read", "--allow-write", "--allow-env"];

/** A bench file and the C baseline benchmarks its figures are compared with. */
interface BenchFile {
  readonly file: string;
  /** C benchmarks, each with optional `[iterations, batches]` for the baseline. */
  readonly c: readonly (string | readonly [string, number, number])[];
  /** Take part in at most this many rounds (slow or steady benchmarks need fewer). */
  readonly maxRounds?: number;
  /** The region engineer's scaling bench: figures keyed by group and region count. */
  readonly scaling?: boolean;
  readonly prefetch?: boolean;
}

const FILES: readonly BenchFile[] = [
  // Short rounds (the bench files fix `n` to match), so that many rounds
  // alternate ours and C closely: memory slot updates wait for KVM's SRCU
  // grace periods, whose cost swings with whatever else the host runs.
  { file: "slot_map_bench.ts", c: [["slot_map", 1000, 3]] },
  { file: "pam_flip_bench.ts", c: [["pam_flip", 50, 3]] },
  { file: "seabios_pam_bench.ts", c: [["seabios_pam", 30, 3]] },
  {
    file: "guest_memory_bench.ts",
    c: ["read8", "copy_in_4k", "copy_out_4k", "copy_in_1m", "copy_out_1m"],
    maxRounds: 5,
  },
  { file: "region_manager_bench.ts", c: [], scaling: true, maxRounds: 3 },
  { file: "worker_bench.ts", c: [], maxRounds: 5 },
  {
    file: "snapshot_bench.ts",
    c: [["dirty_log_read_1g", 200, 3], ["restore_dirty_1000", 200, 3], ["snapshot_1g", 1, 3]],
    maxRounds: 3,
  },
  {
    file: "prefetch_bench.ts",
    c: ["prefetch_shared", "prefetch_shared_kvm", "prefetch_private", "prefetch_private_kvm"],
    prefetch: true,
  },
];

/** A target: a minimum ratio against C, or a maximum absolute time. */
type Target =
  | { readonly kind: "ratio"; readonly min: number }
  | { readonly kind: "maxNs"; readonly value: number };

interface RowSpec {
  /** Label in the table. */
  readonly label: string;
  /** `deno bench` name of our figure. */
  readonly ours: string;
  /** Baseline benchmark name of the C figure (with `ffi`: a `deno bench` name instead). */
  readonly c: string;
  /** Compare with our own benchmark `c` (same process) instead of the C baseline. */
  readonly ffi?: boolean;
  readonly target?: Target;
}

const ROWS: readonly RowSpec[] = [
  {
    label: "1. slot map cycle, 2 MiB region (map+unmap)",
    ours: "slot_map",
    c: "slot_map",
    target: { kind: "ratio", min: 0.9 },
  },
  {
    label: "2. PAM flip, 14 regions RW->RO->RW",
    ours: "pam_flip",
    c: "pam_flip",
    target: { kind: "ratio", min: 0.9 },
  },
  {
    label: "2b. SeaBIOS POST PAM sequence (reset + 4 writes, 38 changes)",
    ours: "seabios_pam",
    c: "seabios_pam",
    target: { kind: "ratio", min: 0.9 },
  },
  {
    label: "4. GuestMemory 8-byte read (bigint gpa)",
    ours: "read8",
    c: "read8",
    target: { kind: "maxNs", value: 200 },
  },
  {
    label: "4. GuestMemory 8-byte read (number gpa)",
    ours: "read8_number",
    c: "read8",
    target: { kind: "maxNs", value: 200 },
  },
  { label: "4. copy 4 KiB into guest", ours: "copy_in_4k", c: "copy_in_4k" },
  { label: "4. copy 4 KiB out of guest", ours: "copy_out_4k", c: "copy_out_4k" },
  {
    label: "4. copy 1 MiB into guest",
    ours: "copy_in_1m",
    c: "copy_in_1m",
    target: { kind: "ratio", min: 0.8 },
  },
  {
    label: "4. copy 1 MiB out of guest",
    ours: "copy_out_1m",
    c: "copy_out_1m",
    target: { kind: "ratio", min: 0.8 },
  },
  {
    label: "6. 8-byte read loop: Worker vs main thread",
    ours: "read8_worker",
    c: "read8_main",
    ffi: true,
    target: { kind: "ratio", min: 0.5 },
  },
  {
    label: "6. copy 1 MiB out of guest in a Worker",
    ours: "copy_out_1m_worker",
    c: "copy_out_1m",
  },
  {
    label: "6. region change, Worker reader idle vs none",
    ours: "region_change_shared_idle",
    c: "region_change_unshared",
    ffi: true,
  },
  {
    label: "6. region change, Worker reading meanwhile vs none",
    ours: "region_change_shared_busy",
    c: "region_change_unshared",
    ffi: true,
  },
  {
    label: "7. dirty-log read, 1 GiB slot (nothing dirty)",
    ours: "dirty_log_read_1g",
    c: "dirty_log_read_1g",
  },
  {
    label: "7. incremental restore, 1,000 of 1 GiB vs C memcpy",
    ours: "restore_dirty_1000",
    c: "restore_dirty_1000",
    target: { kind: "ratio", min: 1 / 1.5 },
  },
  {
    label: "7. incremental restore vs full restore of 1 GiB",
    ours: "restore_dirty_1000",
    c: "restore_full_1g",
    ffi: true,
    target: { kind: "ratio", min: 20 },
  },
  {
    label: "7. full snapshot of 1 GiB vs C copy_file_range",
    ours: "snapshot_1g",
    c: "snapshot_1g",
  },
  {
    label: "5. build+prefetch 1 GiB shared vs mmap+populate",
    ours: "prefetch_shared",
    c: "prefetch_shared",
    target: { kind: "ratio", min: 0.9 },
  },
  {
    label: "5. build+prefetch 1 GiB shared vs same sequence",
    ours: "prefetch_shared",
    c: "prefetch_shared_kvm",
  },
  {
    label: "5. build+prefetch 1 GiB private vs mmap+populate",
    ours: "prefetch_private",
    c: "prefetch_private",
    target: { kind: "ratio", min: 0.9 },
  },
  {
    label: "5. build+prefetch 1 GiB private vs same sequence",
    ours: "prefetch_private",
    c: "prefetch_private_kvm",
  },
];

/** Scaling target: the 10,000-region pair costs at most this multiple of the 10-region pair. */
const SCALING_MAX_RATIO = 2;

interface DenoBenchJson {
  readonly runtime: string;
  readonly cpu: string;
  readonly benches: ReadonlyArray<{
    readonly name: string;
    readonly group: string | null;
    readonly results: ReadonlyArray<
      {
        readonly ok?: { readonly n: number; readonly avg: number; readonly min: number };
        readonly failed?: unknown;
      }
    >;
  }>;
}

interface BaselineLine {
  readonly name: string;
  readonly iterations: number;
  readonly nsPerOp: number;
  readonly minNsPerOp: number;
  readonly batches: readonly number[];
}

/** What one round measured: ns per operation by benchmark name. */
interface Round {
  readonly ours: Map<string, number>;
  readonly c: Map<string, number>;
  /** C median of batches (the baseline's own figure), for the JSON output. */
  readonly cMedianOfBatches: Map<string, number>;
  /** Fastest single operation (deno bench `min`; C `minNsPerOp`), by benchmark name. */
  readonly oursMin: Map<string, number>;
  readonly cMin: Map<string, number>;
  /** Scaling benches: `${group}\u0000${count}` -> ns. */
  readonly scaling: Map<string, number>;
  readonly scalingMin: Map<string, number>;
}

function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
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
  return target.kind === "ratio" ? `>= ${target.min}` : `< ${formatNs(target.value)}`;
}

async function run(cmd: string, args: string[], what: string): Promise<string> {
  const output = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
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

const COUNT_WORDS: Readonly<Record<string, number>> = {
  "ten thousand": 10000,
  "a thousand": 1000,
  "one thousand": 1000,
  "a hundred": 100,
  "one hundred": 100,
  "ten": 10,
};

/** The region count in a scaling bench's name: digits (`10,000 regions`) or words. */
function regionCount(name: string): number | undefined {
  const digits = /(\d[\d,_]*)\s*regions?/i.exec(name) ?? /(\d[\d,_]*)/.exec(name);
  if (digits !== null) return Number(digits[1].replace(/[,_]/g, ""));
  const lower = name.toLowerCase();
  for (const [words, count] of Object.entries(COUNT_WORDS)) {
    if (lower.includes(`${words} region`)) return count;
  }
  return undefined;
}

let denoInfo = { runtime: "", cpu: "" };

async function runDenoBench(file: BenchFile, round: Round): Promise<void> {
  const stdout = await run(
    Deno.execPath(),
    ["bench", "--json", ...BENCH_PERMISSIONS, `${HERE}${file.file}`],
    `deno bench bench/${file.file}`,
  );
  const report = JSON.parse(stdout) as DenoBenchJson;
  denoInfo = { runtime: report.runtime, cpu: report.cpu };
  for (const bench of report.benches) {
    const ok = bench.results[0]?.ok;
    if (ok === undefined) {
      console.error(`bench ${bench.name} failed: ${JSON.stringify(bench.results[0])}`);
      continue;
    }
    if (file.scaling) {
      const count = regionCount(bench.name);
      if (count !== undefined) {
        round.scaling.set(`${bench.group ?? ""}\u0000${count}`, ok.avg);
        round.scalingMin.set(`${bench.group ?? ""}\u0000${count}`, ok.min);
      }
    } else {
      // `name_xN`: one operation of the bench runs the measured one N times.
      const batch = /^(.*)_x(\d+)$/.exec(bench.name);
      const name = batch === null ? bench.name : batch[1];
      const per = batch === null ? 1 : Number(batch[2]);
      round.ours.set(name, ok.avg / per);
      round.oursMin.set(name, ok.min / per);
    }
  }
}

async function runBaseline(benches: BenchFile["c"], round: Round): Promise<void> {
  for (const bench of benches) {
    const args = typeof bench === "string" ? [bench] : bench.map(String);
    const stdout = await run(BASELINE, args, `bench/.build/baseline ${args.join(" ")}`);
    for (const line of stdout.split("\n")) {
      if (line.trim() === "") continue;
      const result = JSON.parse(line) as BaselineLine;
      const mean = result.batches.reduce((a, b) => a + b, 0) / result.batches.length;
      round.c.set(result.name, mean);
      round.cMin.set(result.name, result.minNsPerOp);
      round.cMedianOfBatches.set(result.name, result.nsPerOp);
    }
  }
}

function evaluate(
  target: Target | undefined,
  oursNs?: number,
  ratio?: number,
): boolean | undefined {
  if (target === undefined) return undefined;
  if (target.kind === "ratio") return ratio === undefined ? undefined : ratio >= target.min;
  return oursNs === undefined ? undefined : oursNs < target.value;
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
  --runs N           rounds (default 9; the GuestMemory benchmarks take part in at most 5,
                     the region manager scaling in at most 3); figures are medians over rounds
  --prefetch-runs N  rounds that include the slow 1 GiB prefetch benchmarks (default 3)
  --skip-prefetch    leave the prefetch benchmarks out
  --json FILE        also write the results as JSON (*.bench.json is git-ignored)
  --strict           exit 1 when a target is missed`;

function positiveInt(value: string, option: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`${option} must be >= 1, got ${value}`);
  return n;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      runs: { type: "string", default: "9" },
      "prefetch-runs": { type: "string", default: "3" },
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

  console.error("building bench/.build/baseline (cc -O2)");
  await Deno.mkdir(BUILD_DIR, { recursive: true });
  await run("cc", ["-O2", "-o", BASELINE, `${HERE}baseline.c`], "cc -O2 bench/baseline.c");

  const files: BenchFile[] = [];
  for (const file of FILES) {
    if (await exists(`${HERE}${file.file}`)) files.push(file);
    else console.error(`note: bench/${file.file} is missing; its figures are left out`);
  }

  const rounds: Round[] = [];
  for (let r = 0; r < runs; r++) {
    const round: Round = {
      ours: new Map(),
      c: new Map(),
      cMedianOfBatches: new Map(),
      oursMin: new Map(),
      cMin: new Map(),
      scalingMin: new Map(),
      scaling: new Map(),
    };
    for (const file of files) {
      if (file.prefetch && r >= prefetchRuns) continue;
      if (file.maxRounds !== undefined && r >= file.maxRounds) continue;
      console.error(`round ${r + 1}/${runs}: bench/${file.file} and its C baseline`);
      if (r % 2 === 0) {
        await runDenoBench(file, round);
        await runBaseline(file.c, round);
      } else {
        await runBaseline(file.c, round);
        await runDenoBench(file, round);
      }
    }
    rounds.push(round);
  }

  const rows = ROWS.flatMap((spec) => {
    const other = (r: Round) => spec.ffi ? r.ours : r.c;
    const paired = rounds.filter((r) => r.ours.has(spec.ours) && other(r).has(spec.c));
    if (paired.length === 0) return [];
    const oursRounds = paired.map((r) => r.ours.get(spec.ours)!);
    const cRounds = paired.map((r) => other(r).get(spec.c)!);
    const ratioRounds = paired.map((_, i) => cRounds[i] / oursRounds[i]);
    const oursNs = median(oursRounds);
    const ratio = median(ratioRounds);
    // Best case: the fastest single operation over all rounds, on each side.
    const oursBest = Math.min(...paired.map((r) => r.oursMin.get(spec.ours)!));
    const cBest = Math.min(
      ...paired.map((r) => (spec.ffi ? r.oursMin : r.cMin).get(spec.c)!),
    );
    return [{
      label: spec.label,
      ours: spec.ours,
      c: spec.c,
      ffi: spec.ffi ?? false,
      oursNs,
      cNs: median(cRounds),
      ratio,
      target: spec.target,
      pass: evaluate(spec.target, oursNs, ratio),
      oursRounds,
      cRounds,
      ratioRounds,
      oursBest,
      cBest,
      bestRatio: cBest / oursBest,
    }];
  });

  // Scaling: per group, the cost at each region count and largest/smallest.
  const keys = [...new Set(rounds.flatMap((r) => [...r.scaling.keys()]))];
  const groups = [...new Set(keys.map((k) => k.split("\u0000")[0]))];
  const scaling = groups.map((group) => {
    const counts = keys.filter((k) => k.startsWith(`${group}\u0000`))
      .map((k) => Number(k.split("\u0000")[1])).sort((a, b) => a - b);
    const points = counts.map((regions) => {
      const key = `${group}\u0000${regions}`;
      const perRound = rounds.flatMap((r) => r.scaling.has(key) ? [r.scaling.get(key)!] : []);
      const mins = rounds.flatMap((r) => r.scalingMin.has(key) ? [r.scalingMin.get(key)!] : []);
      return { regions, ns: median(perRound)!, best: Math.min(...mins), rounds: perRound };
    });
    const ratioRounds = rounds.flatMap((r) => {
      const lo = r.scaling.get(`${group}\u0000${counts[0]}`);
      const hi = r.scaling.get(`${group}\u0000${counts[counts.length - 1]}`);
      return lo !== undefined && hi !== undefined && counts.length >= 2 ? [hi / lo] : [];
    });
    const ratio = median(ratioRounds);
    const bestRatio = points.length >= 2
      ? points[points.length - 1].best / points[0].best
      : undefined;
    return {
      group,
      points,
      ratio,
      bestRatio,
      ratioRounds,
      pass: ratio === undefined ? undefined : ratio <= SCALING_MAX_RATIO,
    };
  });

  const verdict = (pass: boolean | undefined) => pass === undefined ? "-" : pass ? "pass" : "MISS";
  const tableRows = rows.map((r) => [
    r.label,
    formatNs(r.oursNs),
    formatNs(r.cNs),
    r.ratio === undefined ? "-" : r.ratio.toFixed(3),
    formatNs(r.oursBest),
    formatNs(r.cBest),
    r.bestRatio.toFixed(3),
    formatTarget(r.target),
    verdict(r.pass),
  ]);
  for (const s of scaling) {
    const name = s.group === "" ? "" : ` (${s.group})`;
    for (const p of s.points) {
      tableRows.push([
        `3. region map/unmap pair, ${p.regions.toLocaleString("en-US")} regions${name}`,
        formatNs(p.ns),
        "-",
        "-",
        formatNs(p.best),
        "-",
        "-",
        "-",
        "-",
      ]);
    }
    if (s.ratio !== undefined) {
      const lo = s.points[0].regions.toLocaleString("en-US");
      const hi = s.points[s.points.length - 1].regions.toLocaleString("en-US");
      tableRows.push([
        `3. scaling${name}: ${hi} vs ${lo} regions`,
        `${s.ratio.toFixed(3)}x`,
        "-",
        "-",
        s.bestRatio === undefined ? "-" : `${s.bestRatio.toFixed(3)}x`,
        "-",
        "-",
        `<= ${SCALING_MAX_RATIO}x`,
        verdict(s.pass),
      ]);
    }
  }

  // `uname -r` rather than Deno.osRelease(), which would need --allow-sys.
  const kernel = (await run("uname", ["-r"], "uname -r")).trim();
  console.log(
    `\nmembacking bench: ${denoInfo.runtime}, ${denoInfo.cpu}, Linux ${kernel}, ${runs} round(s)` +
      (prefetchRuns < runs ? ` (${prefetchRuns} with prefetch)` : ""),
  );
  console.log(
    "ours, C: median over rounds of the mean time per operation; ratio: median over rounds of\n" +
      "(C time / our time) = our throughput / C throughput; targets are judged on it.\n" +
      "best ours, best C: fastest single operation over all rounds (for fast operations, the\n" +
      "fastest batch mean); best ratio = best C / best ours: the cost with the host's noise removed\n",
  );
  console.log(
    'rows "vs the same syscalls via FFI": the C column is our own bench making the same\n' +
      "syscalls through the FFI layer alone, in the same process (the library's own cost)\n",
  );
  printTable(
    ["benchmark", "ours", "C", "ratio", "best ours", "best C", "best ratio", "target", "result"],
    tableRows,
  );

  const missed = [...rows.map((r) => r.pass), ...scaling.map((s) => s.pass)]
    .filter((p) => p === false).length;
  console.log(`\n${missed === 0 ? "all targets met" : `${missed} target(s) missed`}`);

  if (values.json !== undefined) {
    const report = {
      date: new Date().toISOString(),
      runtime: denoInfo.runtime,
      cpu: denoInfo.cpu,
      kernel,
      rounds: runs,
      prefetchRounds: prefetchRuns,
      statistic: "per round: mean ns per operation (deno bench avg; C total time / operations); " +
        "reported: median over rounds",
      ratioDefinition: "our throughput / C throughput = C ns / our ns, median of per-round ratios",
      benchmarks: rows.map((r) => ({
        label: r.label,
        ours: r.ours,
        c: r.c,
        comparedWith: r.ffi ? "another deno bench row, same process" : "C baseline",
        oursNsPerOp: r.oursNs ?? null,
        cNsPerOp: r.cNs ?? null,
        ratio: r.ratio ?? null,
        target: r.target ?? null,
        pass: r.pass ?? null,
        oursRounds: r.oursRounds,
        cRounds: r.cRounds,
        ratioRounds: r.ratioRounds,
        bestOursNsPerOp: r.oursBest,
        bestCNsPerOp: r.cBest,
        bestRatio: r.bestRatio,
      })),
      scaling: scaling.map((s) => ({
        group: s.group,
        points: s.points,
        ratio: s.ratio ?? null,
        ratioRounds: s.ratioRounds,
        bestRatio: s.bestRatio ?? null,
        target: `<= ${SCALING_MAX_RATIO}`,
        pass: s.pass ?? null,
      })),
      cMedianOfBatches: Object.fromEntries(
        [...new Set(rounds.flatMap((r) => [...r.cMedianOfBatches.keys()]))].map((name) => [
          name,
          rounds.flatMap((r) =>
            r.cMedianOfBatches.has(name) ? [r.cMedianOfBatches.get(name)!] : []
          ),
        ]),
      ),
    };
    await Deno.writeTextFile(values.json, JSON.stringify(report, null, 2) + "\n");
    console.log(`wrote ${values.json}`);
  }
  return values.strict && missed > 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
