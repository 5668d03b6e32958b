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
export function renderJson(report: DemoReport): string {
  return JSON.stringify(
    {
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
