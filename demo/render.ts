/**
 * Turns a {@linkcode DemoReport} into text for a terminal (aligned tables,
 * optional colour) or into one JSON document.
 *
 * @module
 */
import { MemorySize } from "../mod.ts";
import {
  type DemoReport,
  describe,
  hex,
  type Observation,
  type RegionRow,
  seenJson,
  type SlotRow,
  type Snapshot,
} from "./scenario.ts";
import { renderTable, type Style } from "./table.ts";
import type { FirmwareEvent, FirmwareReport } from "./firmware.ts";

function regionTable(style: Style, rows: readonly RegionRow[]): string {
  return renderTable(
    style,
    [
      { title: "GUEST RANGE" },
      { title: "SIZE", align: "right" },
      { title: "REGION" },
      { title: "PRIO", align: "right" },
      { title: "STATE" },
      { title: "ACCESS" },
      { title: "BACKING" },
    ],
    rows.map((r) => [
      style.paint(`${r.range}`, "cyan"),
      `${new MemorySize(r.range.len)}`,
      r.name === "ram" ? r.name : style.paint(r.name, "magenta"),
      `${r.priority}`,
      r.state === "visible"
        ? style.paint(r.state, "green")
        : style.paint(r.state, r.state === "hidden" ? "yellow" : "dim"),
      r.access === "ro" ? style.paint(r.access, "yellow") : r.access,
      r.backing,
    ]),
  );
}

function slotTable(style: Style, rows: readonly SlotRow[], kvm: boolean): string {
  const columns = [
    ...(kvm ? [{ title: "SLOT", align: "right" as const }] : []),
    { title: "GUEST RANGE" },
    { title: "SIZE", align: "right" as const },
    { title: "ACCESS" },
    { title: "HOST ADDRESS" },
    { title: "NOTE" },
  ];
  return renderTable(
    style,
    columns,
    rows.map((s) => [
      ...(kvm ? [`${s.slot}`] : []),
      style.paint(`${s.range}`, "cyan"),
      `${new MemorySize(s.range.len)}`,
      s.access === "ro" ? style.paint(s.access, "yellow") : s.access,
      style.paint(hex(s.hostAddress), "dim"),
      style.paint(s.note, "dim"),
    ]),
  );
}

function rowKey(row: RegionRow | SlotRow): string {
  return JSON.stringify(row, (_, v) => typeof v === "bigint" ? `${v}` : v);
}

/** The rows of `rows` that are not in `base` (all of them without a base). */
function changed<T extends RegionRow | SlotRow>(rows: readonly T[], base?: readonly T[]): T[] {
  if (base === undefined) return [...rows];
  const before = new Set(base.map(rowKey));
  return rows.filter((row) => !before.has(rowKey(row)));
}

function snapshotText(
  style: Style,
  report: DemoReport,
  snapshot: Snapshot,
  base?: Snapshot,
): string {
  const kvm = report.mode === "kvm";
  const suffix = base === undefined ? "" : " (rows that differ from the start)";
  const regions = changed(snapshot.regions, base?.regions);
  const slots = changed(snapshot.slots, base?.slots);
  const none = (why: string) => `  ${style.paint(`(same as at the start${why})`, "dim")}`;
  // A slot's host address is fixed by its guest address (one reservation):
  // when only the backing behind those host pages changed, the rows stay the same.
  const sameSlots = regions.length === 0
    ? ""
    : "; same guest ranges and host addresses, other memory behind them";
  return [
    style.paint(`Region map, ${snapshot.label}${suffix}`, "bold"),
    regions.length === 0 ? none("") : regionTable(style, regions),
    "",
    style.paint(
      `${kvm ? "KVM memory slots" : "Recording partition map"}, ${snapshot.label}${suffix}`,
      "bold",
    ),
    slots.length === 0 ? none(sameSlots) : slotTable(style, slots, kvm),
  ].join("\n");
}

function observationLine(style: Style, o: Observation, width: number, kvm: boolean): string {
  const mark = o.ok ? style.paint("✓", "green") : style.paint("✗", "red", "bold");
  // Without KVM no guest ran: the "guest" results come from the partition map.
  const actor = o.actor === "guest" && !kvm ? "map" : o.actor;
  const who = style.paint(actor.padEnd(5), o.actor === "guest" ? "blue" : "dim");
  const seen = describe(o.seen, o.size);
  const painted = o.seen.kind === "mmio" ? style.paint(seen, "yellow") : seen;
  const line = `    ${mark} ${who} ${o.action.padEnd(width)}  → ${painted}`;
  if (o.ok) return line;
  return `${line}\n      ${style.paint(`expected ${describe(o.expected, o.size)}`, "red")}`;
}

/** The report as text (colour per `style`). */
export function renderText(style: Style, report: DemoReport): string {
  const out: string[] = [];
  const mode = report.mode === "kvm"
    ? "a KVM guest (one vCPU, 32-bit protected mode) makes every access"
    : 'no guest: "map" lines are what a guest would see, worked out from the recording partition\'s map';
  out.push(style.paint("membacking demo", "bold"));
  out.push(
    `  ${new MemorySize(report.memorySize)} RAM, MMIO gap ${report.mmioGap}, x86 legacy ${
      report.x86Legacy ? "on" : "off"
    }${report.options.hugepages ? ", hugepages" : ""}${
      report.options.privateMemory ? ", private memory" : ""
    }${report.options.thp ? " + THP" : ""}${report.options.prefetch ? ", prefetch" : ""}`,
  );
  out.push(`  ${mode}`);
  for (const note of report.notes) out.push(`  ${style.paint("note:", "yellow")} ${note}`);
  out.push("");
  out.push(snapshotText(style, report, report.snapshots[0]));
  out.push("");
  out.push(style.paint("Scenario", "bold"));
  const width = Math.max(
    ...report.steps.flatMap((s) => s.observations.map((o) => o.action.length)),
  );
  report.steps.forEach((step, i) => {
    out.push(`  ${style.paint(`${i + 1}. ${step.title}`, "bold")}`);
    for (const action of step.actions) out.push(`    ${style.paint(`· ${action}`, "dim")}`);
    for (const o of step.observations) {
      out.push(observationLine(style, o, width, report.mode === "kvm"));
    }
  });
  for (const snapshot of report.snapshots.slice(1)) {
    out.push("");
    out.push(snapshotText(style, report, snapshot, report.snapshots[0]));
  }
  const total = report.steps.reduce((n, s) => n + s.observations.length, 0);
  const failed = report.steps.reduce((n, s) => n + s.observations.filter((o) => !o.ok).length, 0);
  out.push("");
  out.push(
    failed === 0
      ? style.paint(`All ${total} observations as expected.`, "green", "bold")
      : style.paint(`${failed} of ${total} observations differ from the expected.`, "red", "bold"),
  );
  return out.join("\n");
}

function snapshotJson(snapshot: Snapshot): Record<string, unknown> {
  return {
    label: snapshot.label,
    regions: snapshot.regions.map((r) => ({
      range: `${r.range}`,
      size: hex(r.range.len),
      name: r.name,
      priority: r.priority,
      state: r.state,
      access: r.access,
      backing: r.backing,
    })),
    slots: snapshot.slots.map((s) => ({
      slot: s.slot ?? null,
      range: `${s.range}`,
      size: hex(s.range.len),
      access: s.access,
      host_address: hex(s.hostAddress),
      note: s.note,
    })),
  };
}

/** The report as one JSON document (addresses and values as hex strings). */
export function renderJson(report: DemoReport, firmware?: FirmwareReport): string {
  return JSON.stringify(
    {
      ...(firmware === undefined ? {} : { firmware: firmwareJson(firmware) }),
      mode: report.mode,
      memory_size: hex(report.memorySize),
      mmio_gap: `${report.mmioGap}`,
      x86_legacy: report.x86Legacy,
      options: {
        hugepages: report.options.hugepages,
        private_memory: report.options.privateMemory,
        thp: report.options.thp,
        prefetch: report.options.prefetch,
        kvm: report.options.kvm,
      },
      notes: report.notes,
      snapshots: report.snapshots.map(snapshotJson),
      steps: report.steps.map((s) => ({
        title: s.title,
        actions: s.actions,
        observations: s.observations.map((o) => ({
          actor: o.actor,
          action: o.action,
          size: o.size,
          seen: seenJson(o.seen, o.size),
          expected: seenJson(o.expected, o.size),
          ok: o.ok,
        })),
      })),
      ok: report.ok,
    },
    null,
    2,
  );
}

const SHORT: Record<string, string> = {
  "read-write": "read-write",
  "read-only": "read-only",
  "unmapped": "unmapped (ROM or nothing shows)",
};

/** The changes of one PAM write, adjacent pieces with the same visibility merged. */
function pamChangesText(changes: Extract<FirmwareEvent, { kind: "pam" }>["changes"]): string {
  if (changes.length === 0) return "no change";
  const runs: { start: string; end: string; visibility: string; pieces: number }[] = [];
  for (const c of changes) {
    const [start, end] = c.range.split("-");
    const last = runs.at(-1);
    if (last !== undefined && last.end === start && last.visibility === c.visibility) {
      last.end = end;
      last.pieces++;
    } else {
      runs.push({ start, end, visibility: c.visibility, pieces: 1 });
    }
  }
  return runs.map((r) =>
    `${r.start}-${r.end}${r.pieces > 1 ? ` (${r.pieces} pieces)` : ""} ${SHORT[r.visibility]}`
  ).join(", ");
}

/** The firmware part as text: one line when SeaBIOS is not installed. */
export function renderFirmwareText(style: Style, firmware: FirmwareReport): string {
  if (firmware.status === "notInstalled") {
    return `${style.paint("note:", "yellow")} SeaBIOS is not installed (${firmware.bios}): ` +
      "apt-get install seabios, and the demo boots it on membacking first";
  }
  if (firmware.status === "skipped") {
    return `${style.paint("note:", "yellow")} SeaBIOS boot skipped (${firmware.reason})`;
  }
  const out: string[] = [];
  out.push(style.paint("SeaBIOS on membacking", "bold"));
  out.push(
    `  ${firmware.bios} (${new MemorySize(BigInt(firmware.size))}), one vCPU, 128 MB RAM, ` +
      "our option ROM as fw_cfg genroms/marker.rom; firmware output (debug port 0x402), " +
      "PAM writes and resets in order:",
  );
  for (const e of firmware.events) {
    const boot = style.paint(`[${e.boot}]`, "dim");
    switch (e.kind) {
      case "line":
        out.push(`  ${boot} ${style.paint("│", "dim")} ${e.text}`);
        break;
      case "pam":
        out.push(
          `  ${boot} ${style.paint("PAM", "magenta", "bold")} config write ${
            hex(e.offset)
          }/${e.width} = ${hex(e.value)} → ${pamChangesText(e.changes)}`,
        );
        break;
      case "reset":
        out.push(
          `  ${boot} ${style.paint("RESET", "magenta", "bold")} through ${e.how}: PAM closed, ` +
            "the vCPU back at the reset vector, RAM kept",
        );
        break;
      case "droppedWrite":
        out.push(
          `  ${boot} ${style.paint("MMIO", "yellow")} guest write at ${
            hex(e.gpa)
          } to read-only memory: dropped`,
        );
        break;
    }
  }
  if (firmware.endOfPost !== undefined) {
    const snapshot = firmware.endOfPost;
    out.push("");
    out.push(style.paint(`Region map, ${snapshot.label}`, "bold"));
    out.push(regionTable(style, snapshot.regions));
    out.push("");
    out.push(style.paint(`KVM memory slots, ${snapshot.label}`, "bold"));
    out.push(slotTable(style, snapshot.slots, true));
  }
  out.push("");
  for (const c of firmware.checks) {
    out.push(`  ${c.ok ? style.paint("✓", "green") : style.paint("✗", "red", "bold")} ${c.what}`);
  }
  out.push(
    firmware.ok
      ? style.paint(
        `SeaBIOS booted twice in ${(firmware.milliseconds / 1000).toFixed(1)} s.`,
        "green",
        "bold",
      )
      : style.paint("SeaBIOS did not do what it should.", "red", "bold"),
  );
  return out.join("\n");
}

/** The firmware part as a JSON value. */
export function firmwareJson(firmware: FirmwareReport): Record<string, unknown> {
  if (firmware.status !== "booted") return { ...firmware };
  return {
    status: firmware.status,
    bios: firmware.bios,
    size: hex(firmware.size),
    events: firmware.events.map((e) =>
      e.kind === "pam"
        ? { ...e, offset: hex(e.offset), value: hex(e.value) }
        : e.kind === "droppedWrite"
        ? { ...e, gpa: hex(e.gpa) }
        : e
    ),
    end_of_post: firmware.endOfPost === undefined ? null : snapshotJson(firmware.endOfPost),
    option_rom_byte: hex(firmware.optionRomByte),
    checks: firmware.checks,
    ok: firmware.ok,
  };
}
