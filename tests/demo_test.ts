import assert from "node:assert/strict";
import {
  skipWithoutHugetlb,
  skipWithoutKvm,
  skipWithoutSeabios,
  withHugetlbPool,
} from "./support/requirements.ts";

const MAIN = new URL("../demo/main.ts", import.meta.url).pathname;

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the demo as `deno task demo` does, with `NO_COLOR=1`. */
async function demo(...args: string[]): Promise<Run> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-ffi", "--allow-read", "--allow-env", MAIN, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

interface JsonObservation {
  actor: string;
  action: string;
  size: number;
  seen: Record<string, unknown>;
  expected: Record<string, unknown>;
  ok: boolean;
}

interface JsonReport {
  mode: string;
  memory_size: string;
  x86_legacy: boolean;
  notes: string[];
  snapshots: {
    label: string;
    regions: { range: string; name: string; priority: number; state: string; access: string }[];
    slots: {
      slot: number | null;
      range: string;
      size: string;
      access: string;
      host_address: string;
      note: string;
    }[];
  }[];
  steps: { title: string; actions: string[]; observations: JsonObservation[] }[];
  ok: boolean;
  firmware?: {
    status: string;
    bios?: string;
    size?: string;
    events?: {
      kind: string;
      boot: number;
      text?: string;
      offset?: string;
      width?: number;
      value?: string;
      changes?: { range: string; visibility: string }[];
      how?: string;
      gpa?: string;
    }[];
    end_of_post?: { regions: { range: string; name: string; access: string }[]; slots: unknown[] };
    option_rom_byte?: string;
    checks?: { what: string; ok: boolean }[];
    ok?: boolean;
  };
}

function step(report: JsonReport, title: string): JsonObservation[] {
  const found = report.steps.find((s) => s.title === title);
  assert.ok(found !== undefined, `no step "${title}" in ${report.steps.map((s) => s.title)}`);
  return found.observations;
}

/** The steps of every layout: a checkpoint, a guest and a host write, the reset to it. */
function assertCheckpointSteps(report: JsonReport): void {
  const steps = (title: string) => {
    const found = report.steps.find((s) => s.title === title);
    assert.ok(found !== undefined, `no step "${title}"`);
    return found;
  };
  const taken = steps("checkpoint: dirty tracking on, RAM snapshotted, then the guest writes");
  assert.deepEqual(taken.observations.map((o) => [o.action, o.seen]), [
    ["store32 0x200000 = 0x00ddba11", { kind: "done" }],
  ]);
  const written = steps("the host writes: the tracker reports the guest's page and the host's");
  assert.deepEqual(written.actions, [
    "host writes 0x7e577e57 at 0x300000 through GuestMemory",
    "dirtyTracker().dirtyPages(): 0x200000, 0x300000",
  ]);
  const reset = steps("reset to the checkpoint: only the dirty pages are copied back");
  assert.deepEqual(reset.actions, [
    "checkpoint.restoreDirty(manager): 2 pages copied",
    "dirtyTracker().dirtyPages(): 0 pages",
  ]);
  assert.deepEqual(reset.observations.map((o) => o.seen), [
    { kind: "value", value: "0x600dcafe" },
    { kind: "host", value: "0x00000000" },
  ]);
}

/** The observations a run on the x86 legacy layout must make (KVM or recording). */
function assertLegacyScenario(report: JsonReport): void {
  assert.equal(report.ok, true);
  assert.equal(report.x86_legacy, true);
  assert.equal(report.memory_size, "0x20000000");
  for (const s of report.steps) for (const o of s.observations) assert.equal(o.ok, true, o.action);

  assert.deepEqual(step(report, "RAM: the host writes, the guest reads")[0].seen, {
    kind: "value",
    value: "0x600dcafe",
  });

  const readOnly = step(report, "PAM 0xc0000-0xc4000 read-only");
  assert.deepEqual(readOnly.map((o) => [o.actor, o.action, o.seen]), [
    ["guest", "store32 0xc0010 = 0xdeadbeef", {
      kind: "mmio",
      gpa: "0xc0010",
      direction: "write",
      size: 4,
      data: "efbeadde",
    }],
    ["host", "GuestMemory.readU32(0xc0010)", { kind: "host", value: "0x0badf00d" }],
    ["guest", "load32 0xc0010", { kind: "value", value: "0x0badf00d" }],
  ]);

  assert.deepEqual(step(report, "PAM 0xc0000-0xc4000 unmapped").map((o) => o.seen), [
    { kind: "mmio", gpa: "0xc0010", direction: "read", size: 4, data: "" },
  ]);
  assert.deepEqual(step(report, "PAM 0xc0000-0xc4000 read-write again")[0].seen, {
    kind: "value",
    value: "0x0badf00d",
  });

  assert.deepEqual(
    step(report, "framebuffer (128 KB) mapped under the VGA window").map((o) => o.seen),
    [{ kind: "value", value: "0x1a2b3c4d" }],
  );
  assert.deepEqual(
    step(report, "VGA window RAM unmapped: the framebuffer shows through").map((o) => o.seen),
    [
      { kind: "value", value: "0xfb000010" },
      { kind: "value", value: "0xfb01fffc" },
      { kind: "done" },
      { kind: "host", value: "0x5eed5eed" },
    ],
  );
  assert.deepEqual(
    step(report, "VGA window RAM mapped again: RAM hides the framebuffer").map((o) => o.seen),
    [{ kind: "value", value: "0x1a2b3c4d" }],
  );

  assertCheckpointSteps(report);

  // 16 RAM regions at the start; with the framebuffer showing, the VGA RAM is unmapped.
  const [start, shown] = report.snapshots;
  assert.equal(start.regions.length, 16);
  assert.ok(start.regions.every((r) => r.name === "ram" && r.state === "visible"));
  assert.deepEqual(
    shown.regions.filter((r) => r.range === "0xa0000-0xc0000").map((r) => [r.name, r.state]),
    [["ram", "unmapped"], ["framebuffer", "visible"]],
  );
}

/** The firmware part of a `--json` run: SeaBIOS booted twice, PAM and all. */
function assertFirmwareJson(report: JsonReport): void {
  const firmware = report.firmware!;
  assert.equal(firmware.status, "booted");
  assert.equal(firmware.bios, "/usr/share/seabios/bios.bin");
  assert.equal(firmware.size, "0x20000");
  assert.equal(firmware.ok, true);
  assert.ok(firmware.checks!.every((c) => c.ok));
  const events = firmware.events!;
  assert.deepEqual(events[0], {
    kind: "line",
    boot: 1,
    text: "SeaBIOS (version 1.16.2-debian-1.16.2-1)",
  });
  assert.deepEqual(
    events.filter((e) => e.kind === "pam" && e.boot === 1).map((e) => [e.offset, e.value]),
    [
      ["0x58", "0x33333000"],
      ["0x5c", "0x33333333"],
      ["0x58", "0x11111000"],
      ["0x5c", "0x31111111"],
      ["0x58", "0x33333000"], // SeaBIOS reopens shadow RAM to restore itself before rebooting
      ["0x5c", "0x33333333"],
    ],
  );
  assert.deepEqual(events.filter((e) => e.kind === "droppedWrite"), [
    { kind: "droppedWrite", boot: 1, gpa: "0xc01f0" },
  ]);
  assert.equal(firmware.option_rom_byte, "0xa5");
  assert.deepEqual(events.filter((e) => e.kind === "reset"), [
    { kind: "reset", boot: 2, how: "0xcf9" },
  ]);
  assert.deepEqual(events.at(-1), {
    kind: "line",
    boot: 2,
    text: "SeaBIOS (version 1.16.2-debian-1.16.2-1)",
  });
  const regions = firmware.end_of_post!.regions;
  assert.deepEqual(
    regions.filter((r) => r.range === "0xf0000-0x100000").map((r) => [r.name, r.access]),
    [["ram", "ro"], ["bios-f0000", "ro"]],
  );
  assert.equal(firmware.end_of_post!.slots.length, 17);
}

/** The firmware part of a text run. */
function assertFirmwareText(stdout: string): void {
  const lines = stdout.split("\n");
  for (
    const line of [
      "SeaBIOS on membacking",
      "  [1] │ SeaBIOS (version 1.16.2-debian-1.16.2-1)",
      "  [1] PAM config write 0x58/4 = 0x33333000 → 0xc0000-0xd0000 (4 pieces) read-write, 0xf0000-0x100000 read-write",
      "  [1] PAM config write 0x5c/4 = 0x31111111 → 0xd0000-0xec000 (7 pieces) read-only",
      "  [1] │ membacking rom: write to own image dropped",
      "  [2] RESET through 0xcf9: PAM closed, the vCPU back at the reset vector, RAM kept",
      "  [2] │ SeaBIOS (version 1.16.2-debian-1.16.2-1)",
      "Region map, at the end of POST (PAM locked)",
      "KVM memory slots, at the end of POST (PAM locked)",
      "  ✓ a warm reset through 0xcf9 closed PAM and the second banner ran from ROM",
      "membacking demo",
      "All 23 observations as expected.",
    ]
  ) {
    assert.ok(lines.includes(line), `missing line ${JSON.stringify(line)}`);
  }
  assert.match(stdout, /^SeaBIOS booted twice in \d+\.\d s\.$/m);
  assert.ok(
    stdout.indexOf("SeaBIOS on membacking") < stdout.indexOf("membacking demo"),
  );
}

Deno.test({
  name: "demo on KVM: --json records the guest's observations",
  ignore: skipWithoutKvm(),
  fn: async () => {
    const run = await demo("--json");
    assert.equal(run.stderr, "");
    assert.equal(run.code, 0);
    const report = JSON.parse(run.stdout) as JsonReport;
    assert.equal(report.mode, "kvm");
    assert.deepEqual(report.notes, []);
    assertLegacyScenario(report);
    // With SeaBIOS installed (required in CI), the demo boots it first.
    if (!skipWithoutSeabios()) assertFirmwareJson(report);
    else assert.equal(report.firmware?.status, "notInstalled");
    const slots = report.snapshots[0].slots;
    assert.equal(slots.length, 17); // 16 RAM regions and the probe's code page
    const { host_address, ...code } = slots[16];
    assert.match(host_address, /^0x[0-9a-f]+$/);
    assert.deepEqual(code, {
      slot: 16,
      range: "0xfffff000-0x100000000",
      size: "0x1000",
      access: "ro",
      note: "probe code page",
    });
  },
});

Deno.test({
  name: "demo on KVM: plain text output",
  ignore: skipWithoutKvm(),
  fn: async () => {
    const run = await demo();
    assert.equal(run.code, 0);
    assert.equal(run.stderr, "");
    assert.ok(!run.stdout.includes("\x1b["), "NO_COLOR output has no escapes");
    for (
      const line of [
        "membacking demo",
        "  512 MB RAM, MMIO gap 0xe0000000-0x100000000, x86 legacy on",
        "  a KVM guest (one vCPU, 32-bit protected mode) makes every access",
        "KVM memory slots, after build and attach",
        "All 23 observations as expected.",
      ]
    ) {
      assert.ok(run.stdout.split("\n").includes(line), `missing line ${JSON.stringify(line)}`);
    }
    assert.match(
      run.stdout,
      /✓ guest store32 0xc0010 = 0xdeadbeef +→ MMIO exit: write 4 bytes at 0xc0010 data ef be ad de/,
    );
    assert.match(run.stdout, /✓ guest load32 0xa0010 +→ 0xfb000010/);
    if (!skipWithoutSeabios()) assertFirmwareText(run.stdout);
  },
});

Deno.test({
  name: "demo on KVM: --private skips the x86 legacy steps and uses the MMIO gap",
  ignore: skipWithoutKvm(),
  fn: async () => {
    const run = await demo("--json", "--private", "--memory", "64M", "--no-firmware");
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout) as JsonReport;
    assert.equal(report.ok, true);
    assert.equal(report.x86_legacy, false);
    assert.equal(report.notes.length, 1);
    assert.match(report.notes[0], /^--private rules out x86 legacy splitting/);
    assert.ok(!report.steps.some((s) => s.title.startsWith("PAM")));
    assert.deepEqual(
      step(report, "framebuffer (128 KB) mapped in the MMIO gap").map((o) => o.seen),
      [
        { kind: "value", value: "0xfb000010" },
        { kind: "value", value: "0xfb01fffc" },
        { kind: "done" },
        { kind: "host", value: "0x5eed5eed" },
      ],
    );
    assert.deepEqual(step(report, "framebuffer unmapped from the guest").map((o) => o.seen), [
      { kind: "mmio", gpa: "0xe0000010", direction: "read", size: 4, data: "" },
    ]);
    assertCheckpointSteps(report); // private RAM: snapshots and incremental restores as well
  },
});

Deno.test("demo without SeaBIOS: one line on how to install it, then the scenario", async () => {
  const run = await demo("--bios", "/nonexistent/bios.bin", "--no-kvm");
  assert.equal(run.code, 0, run.stderr);
  const lines = run.stdout.split("\n");
  assert.equal(
    lines[0],
    "note: SeaBIOS is not installed (/nonexistent/bios.bin): apt-get install seabios, and the demo boots it on membacking first",
  );
  assert.equal(lines[2], "membacking demo");
  assert.ok(!run.stdout.includes("SeaBIOS on membacking"));
});

Deno.test({
  name: "demo --hugepages: RAM from the hugetlb pool, no x86 legacy steps",
  ignore: skipWithoutHugetlb(),
  fn: async () => {
    // 16 MB of RAM is 8 hugepages of 2 MB; --no-kvm keeps the test independent of KVM.
    const report = await withHugetlbPool(8, async (granted) => {
      assert.equal(granted, 8);
      const run = await demo("--json", "--hugepages", "--memory", "16M", "--no-kvm");
      assert.equal(run.code, 0, run.stderr);
      return JSON.parse(run.stdout) as JsonReport;
    });
    assert.equal(report.ok, true);
    assert.equal(report.x86_legacy, false);
    assert.match(report.notes[0], /^--hugepages rules out x86 legacy splitting/);
    assert.deepEqual(
      report.snapshots[0].regions.map((r) => [r.range, r.name, r.state]),
      [["0x0-0x1000000", "ram", "visible"]],
    );
  },
});

Deno.test("demo --hugepages without a big enough pool fails with one line", async () => {
  const run = await demo("--hugepages", "--memory", "64T", "--no-kvm");
  assert.equal(run.code, 2);
  assert.equal(run.stdout, "");
  assert.match(run.stderr, /^error: [^\n]+\n$/);
});

Deno.test("demo --no-kvm: the same scenario on the recording partition", async (t) => {
  await t.step("json", async () => {
    const run = await demo("--json", "--no-kvm");
    assert.equal(run.stderr, "");
    assert.equal(run.code, 0);
    const report = JSON.parse(run.stdout) as JsonReport;
    assert.equal(report.mode, "recording");
    assert.deepEqual(report.notes, [
      "--no-kvm: using the recording partition; no guest runs",
    ]);
    assertLegacyScenario(report);
    assert.equal(report.snapshots[0].slots.length, 16);
    assert.ok(report.snapshots[0].slots.every((s) => s.slot === null));
  });

  await t.step("without a KVM device it says so and runs on the recording partition", async () => {
    const run = await demo("--json", "--kvm-device", "/nonexistent/kvm");
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout) as JsonReport;
    assert.equal(report.mode, "recording");
    assert.deepEqual(report.notes, [
      "KVM is not available (/nonexistent/kvm: No such file or directory); using the recording partition: results below come from its memory map, no guest runs",
    ]);
    assertLegacyScenario(report);
  });

  await t.step("text says that no guest ran", async () => {
    const run = await demo("--no-kvm");
    assert.equal(run.code, 0);
    assert.ok(!run.stdout.includes("\x1b["));
    assert.match(run.stdout, /no guest: "map" lines are what a guest would see/);
    assert.match(run.stdout, /Recording partition map, after build and attach/);
    assert.match(run.stdout, /✓ map {3}load32 0xa0010 +→ 0xfb000010/);
    assert.doesNotMatch(run.stdout, /KVM memory slots/);
  });
});

Deno.test("demo --help and bad options", async (t) => {
  await t.step("--help prints usage and exits 0", async () => {
    for (const flag of ["--help", "-h"]) {
      const run = await demo(flag);
      assert.equal(run.code, 0);
      assert.equal(run.stderr, "");
      assert.ok(run.stdout.startsWith("membacking demo: guest memory, seen by a KVM guest\n"));
      for (
        const option of [
          "--memory",
          "--hugepages",
          "--private",
          "--thp",
          "--prefetch",
          "--json",
          "--no-kvm",
          "--kvm-device",
          "--bios",
          "--no-firmware",
        ]
      ) {
        assert.ok(run.stdout.includes(`  ${option}`), `--help lists ${option}`);
      }
    }
  });

  await t.step("errors are one line on stderr with exit status 2", async () => {
    const cases: [string[], string][] = [
      [["--bogus"], "error: Unknown option '--bogus' (see --help)\n"],
      [["--memory", "lots"], 'error: invalid memory size "lots"\n'],
      [["--memory", "1M"], "error: memory size 1 MB is too small; the demo needs at least 4 MB\n"],
      [["--thp", "--no-kvm"], "error: transparent huge pages requires private memory mode\n"],
    ];
    for (const [args, stderr] of cases) {
      const run = await demo(...args);
      assert.equal(run.code, 2, args.join(" "));
      assert.equal(run.stdout, "");
      assert.equal(run.stderr, stderr);
    }
  });
});

Deno.test("demo tables: aligned columns, colour only when enabled", async (t) => {
  const { renderTable, Style, visibleWidth } = await import("../demo/table.ts");
  const columns = [{ title: "RANGE" }, { title: "SIZE", align: "right" as const }, { title: "" }];
  const rows = [["0x0-0xa0000", "640 KB", "x"], ["0xa0000-0xc0000", "128 KB", ""]];

  await t.step("plain", () => {
    assert.equal(
      renderTable(new Style(false), columns, rows),
      [
        "  RANGE              SIZE",
        "  ───────────────  ──────  ─",
        "  0x0-0xa0000      640 KB  x",
        "  0xa0000-0xc0000  128 KB",
      ].join("\n"),
    );
  });

  await t.step("coloured cells keep the alignment", () => {
    const style = new Style(true);
    assert.equal(style.paint("ok", "green", "bold"), "\x1b[32m\x1b[1mok\x1b[22m\x1b[39m");
    assert.equal(style.paint("", "red"), "");
    const painted = rows.map(([range, size, note]) => [style.paint(range, "cyan"), size, note]);
    const lines = renderTable(style, columns, painted).split("\n");
    assert.equal(lines[0], "  \x1b[1mRANGE\x1b[22m              \x1b[1mSIZE\x1b[22m");
    const plain = renderTable(new Style(false), columns, rows).split("\n");
    assert.deepEqual(lines.map(visibleWidth), plain.map((line) => line.length));
    // deno-lint-ignore no-control-regex
    const strip = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, "");
    assert.deepEqual(lines.map(strip), plain);
  });

  await t.step("NO_COLOR and a non-terminal stdout turn colour off", () => {
    // Under `deno test` stdout is not a terminal.
    assert.equal(Style.forStdout().enabled, false);
  });
});
