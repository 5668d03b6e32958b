/**
 * The demo scenario: build guest memory, attach a partition (KVM when it
 * can, else a recording partition), and walk through RAM accesses, PAM
 * visibility changes, a framebuffer under the VGA window and a reset to a
 * checkpoint (dirty tracking and an incremental restore), recording what
 * the guest saw at every step next to what it should have seen.
 *
 * @module
 */
import {
  GuestMemoryBuilder,
  type GuestMemoryManager,
  MemoryLayout,
  MemoryRange,
  MemorySize,
  type Partition,
  RamVisibility,
  SharedMemoryBacking,
  Vtl,
} from "../mod.ts";
import { KvmPartition } from "../kvm.ts";
import { GuestRamSnapshot } from "../snapshot.ts";
import { GuestProbe, type ProbeResult, type ProbeSize, RecordingPartition } from "../testing.ts";
import { KvmProber, type Prober, RecordingProber } from "./prober.ts";

/** What the user chose on the command line. */
export interface DemoOptions {
  /** Guest RAM size in bytes. */
  readonly memorySize: bigint;
  /** Back RAM with hugetlb pages (turns x86 legacy splitting off). */
  readonly hugepages: boolean;
  /** Private anonymous RAM (turns x86 legacy splitting off). */
  readonly privateMemory: boolean;
  /** Transparent hugepages on private RAM. */
  readonly thp: boolean;
  /** Prefetch RAM into the partition. */
  readonly prefetch: boolean;
  /** Try KVM (false: go straight to the recording partition). */
  readonly kvm: boolean;
  /** The KVM device (default `/dev/kvm`). */
  readonly kvmDevice?: string;
}

/** A value the host read, or what a guest access did. */
export type Seen = ProbeResult | { readonly kind: "host"; readonly value: number };

/** One check: an access and its result next to the expected one. */
export interface Observation {
  /** Who accessed memory. */
  readonly actor: "guest" | "host";
  /** What was done, in words. */
  readonly action: string;
  /** Access size in bytes. */
  readonly size: number;
  /** The result. */
  readonly seen: Seen;
  /** The result the manager's rules call for. */
  readonly expected: Seen;
  /** Whether both agree. */
  readonly ok: boolean;
}

/** One step of the scenario. */
export interface Step {
  /** Short title. */
  readonly title: string;
  /** What the host changed before looking. */
  readonly actions: string[];
  /** What was seen. */
  readonly observations: Observation[];
}

/** One row of the region map. */
export interface RegionRow {
  readonly range: MemoryRange;
  readonly name: string;
  readonly priority: number;
  /** `visible` (active), `hidden` (mapped, beaten by another region) or `unmapped`. */
  readonly state: "visible" | "hidden" | "unmapped";
  /** Guest access when mapped. */
  readonly access: "rw" | "ro" | "-";
  /** The first backing of the region, e.g. `guest-ram+0xc0000`. */
  readonly backing: string;
}

/** One row of the partition's memory map (a KVM slot, or a recorded mapping). */
export interface SlotRow {
  /** KVM slot number (undefined for the recording partition). */
  readonly slot: number | undefined;
  readonly range: MemoryRange;
  readonly access: "rw" | "ro";
  readonly hostAddress: bigint;
  /** What the slot is, when it is not a region (the probe's code page). */
  readonly note: string;
}

/** The region map and the partition's map at one moment. */
export interface Snapshot {
  readonly label: string;
  readonly regions: RegionRow[];
  readonly slots: SlotRow[];
}

/** Everything the demo found out. */
export interface DemoReport {
  /** `kvm`: a guest vCPU made every access; `recording`: derived from the partition map. */
  readonly mode: "kvm" | "recording";
  readonly memorySize: bigint;
  readonly mmioGap: MemoryRange;
  readonly x86Legacy: boolean;
  readonly options: DemoOptions;
  /** Remarks (fallbacks, options turned off). */
  readonly notes: string[];
  readonly snapshots: Snapshot[];
  readonly steps: Step[];
  /** Whether every observation matched its expectation. */
  readonly ok: boolean;
}

/** The MMIO gap below 4 GiB (RAM beyond 3.5 GiB continues above 4 GiB). */
export const MMIO_GAP: MemoryRange = new MemoryRange(0xe000_0000n, 0x1_0000_0000n);
/** The VGA window. */
export const VGA_WINDOW: MemoryRange = new MemoryRange(0xa0000n, 0xc0000n);
/** The PAM piece the scenario plays with. */
export const PAM_PIECE: MemoryRange = new MemoryRange(0xc0000n, 0xc4000n);
/** Size of the framebuffer device region. */
export const FRAMEBUFFER_SIZE = 0x20000n;
/** Smallest RAM size the scenario works with. */
export const MIN_MEMORY = 4n << 20n;

const RAM_A = 0x200000n;
const RAM_VALUE = 0x600dcafe;
const GUEST_VALUE = 0xc0ffee42;
const PAM_ADDR = PAM_PIECE.start + 0x10n;
const PAM_VALUE = 0x0badf00d;
const RAM_UNDER_VGA = 0x1a2b3c4d;
/** Checkpoint step: RAM the guest and the host change after the snapshot. */
const RAM_B = 0x300000n;
const CHECKPOINT_GUEST = 0x0ddba11;
const CHECKPOINT_HOST = 0x7e577e57;

/** The framebuffer's pattern: the 32-bit word at byte offset `o` is `0xfb000000 | o`. */
export function framebufferWord(offset: bigint): number {
  return (0xfb00_0000 | Number(offset)) >>> 0;
}

/** `0x`-prefixed hex. */
export function hex(value: bigint | number): string {
  return `0x${value.toString(16)}`;
}

/** A value of `size` bytes as 2 * `size` hex digits. */
export function hexValue(value: number, size = 4): string {
  return `0x${(value >>> 0).toString(16).padStart(size * 2, "0")}`;
}

/** One line describing `seen`, an access of `size` bytes. */
export function describe(seen: Seen, size = 4): string {
  switch (seen.kind) {
    case "host":
    case "value":
      return hexValue(seen.value, size);
    case "done":
      return "stored";
    case "mmio": {
      const data = seen.isWrite
        ? ` data ${[...seen.data].map((b) => b.toString(16).padStart(2, "0")).join(" ")}`
        : "";
      return `MMIO exit: ${seen.isWrite ? "write" : "read"} ${seen.size} bytes at ${
        hex(seen.gpa)
      }${data}`;
    }
    case "memory_fault":
      return `memory fault${seen.gpa === undefined ? "" : ` at ${hex(seen.gpa)}`}`;
    case "exit":
      return `unexpected exit ${seen.name}`;
  }
}

/** `seen` as plain JSON (hex strings for addresses and data). */
export function seenJson(seen: Seen, size = 4): Record<string, unknown> {
  switch (seen.kind) {
    case "host":
    case "value":
      return { kind: seen.kind, value: hexValue(seen.value, size) };
    case "done":
      return { kind: "done" };
    case "mmio":
      return {
        kind: "mmio",
        gpa: hex(seen.gpa),
        direction: seen.isWrite ? "write" : "read",
        size: seen.size,
        data: [...seen.data].map((b) => b.toString(16).padStart(2, "0")).join(""),
      };
    case "memory_fault":
      return { kind: "memory_fault", gpa: seen.gpa === undefined ? null : hex(seen.gpa) };
    case "exit":
      return { kind: "exit", reason: seen.reason, name: seen.name };
  }
}

function same(a: Seen, b: Seen): boolean {
  return JSON.stringify(seenJson(a)) === JSON.stringify(seenJson(b));
}

function le(value: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (value >>> (8 * i)) & 0xff;
  return out;
}

const mmioRead = (gpa: bigint, size: number): ProbeResult => ({
  kind: "mmio",
  gpa,
  isWrite: false,
  size,
  data: new Uint8Array(0),
});
const mmioWrite = (gpa: bigint, size: number, value: number): ProbeResult => ({
  kind: "mmio",
  gpa,
  isWrite: true,
  size,
  data: le(value, size),
});

/** Records steps and observations as the scenario runs. */
class Recorder {
  readonly steps: Step[] = [];
  readonly #prober: Prober;

  constructor(prober: Prober) {
    this.#prober = prober;
  }

  step(title: string): void {
    this.steps.push({ title, actions: [], observations: [] });
  }

  #current(): Step {
    return this.steps[this.steps.length - 1];
  }

  action(text: string): void {
    this.#current().actions.push(text);
  }

  #observe(
    actor: "guest" | "host",
    action: string,
    size: number,
    seen: Seen,
    expected: Seen,
  ): void {
    const ok = same(seen, expected);
    this.#current().observations.push({ actor, action, size, seen, expected, ok });
  }

  load(gpa: bigint, expected: Seen, size: ProbeSize = 4): void {
    const seen = this.#prober.load(gpa, size);
    this.#observe("guest", `load${size * 8} ${hex(gpa)}`, size, seen, expected);
  }

  store(gpa: bigint, value: number, expected: Seen, size: ProbeSize = 4): void {
    const seen = this.#prober.store(gpa, size, value);
    const action = `store${size * 8} ${hex(gpa)} = ${hexValue(value, size)}`;
    this.#observe("guest", action, size, seen, expected);
  }

  host(action: string, read: () => number, expected: number): void {
    let seen: Seen;
    try {
      seen = { kind: "host", value: read() };
    } catch (error) {
      seen = { kind: "exit", reason: -1, name: (error as Error).message };
    }
    this.#observe("host", action, 4, seen, { kind: "host", value: expected });
  }
}

const FB_NAME = "framebuffer";

/** One region of `GuestMemoryManager.inspect()`. */
interface InspectedRegion {
  readonly map_params: { readonly writable: boolean } | null;
  readonly is_active: boolean;
  readonly priority: number;
  readonly mappings: Record<string, { readonly file_offset: string }>;
}

/** `0xa0000-0xc0000` back to a range. */
function parseRange(text: string): MemoryRange {
  const [start, end] = text.split("-").map((part) => BigInt(part));
  return new MemoryRange(start, end);
}

/** The region table, from the manager's inspection tree (keys are `<range>:<name>`). */
export function regionRows(manager: GuestMemoryManager): RegionRow[] {
  const regions = manager.inspect().regions as Record<string, InspectedRegion>;
  return Object.entries(regions)
    .map(([key, info]): RegionRow => {
      const colon = key.indexOf(":");
      const name = key.slice(colon + 1);
      const mappings = Object.values(info.mappings);
      const label = name === "ram" ? "guest-ram" : name;
      let backing = mappings.length === 0
        ? (name === "ram" ? "private anonymous" : "-")
        : `${label}+${mappings[0].file_offset}`;
      if (mappings.length > 1) backing += ` (+${mappings.length - 1} more)`;
      return {
        range: parseRange(key.slice(0, colon)),
        name,
        priority: info.priority,
        state: info.is_active ? "visible" : info.map_params === null ? "unmapped" : "hidden",
        access: info.map_params === null ? "-" : info.map_params.writable ? "rw" : "ro",
        backing,
      };
    })
    .sort((a, b) => a.range.compare(b.range) || b.priority - a.priority);
}

export function slotRows(partition: Partition, probe: GuestProbe | undefined): SlotRow[] {
  if (partition instanceof KvmPartition) {
    return partition.slots().map((s) => ({
      slot: s.slot,
      range: MemoryRange.fromLength(s.gpa, s.size),
      access: s.readonly ? "ro" : "rw",
      hostAddress: s.hostAddress,
      note: probe !== undefined && s.gpa === probe.codeGpa ? "probe code page" : "",
    }));
  }
  return (partition as RecordingPartition).mappings().map((m) => ({
    slot: undefined,
    range: MemoryRange.fromLength(m.gpa, m.size),
    access: m.writable ? "rw" : "ro",
    hostAddress: m.hostAddress,
    note: "",
  }));
}

function openKvm(notes: string[], wanted: boolean, path?: string): KvmPartition | undefined {
  if (!wanted) {
    notes.push("--no-kvm: using the recording partition; no guest runs");
    return undefined;
  }
  try {
    return KvmPartition.create({ path });
  } catch (error) {
    const cause = error instanceof Error && error.cause instanceof Error
      ? `: ${error.cause.message}`
      : "";
    const message = `${path ?? "/dev/kvm"}: ${(error as Error).message}${cause}`;
    notes.push(
      `KVM is not available (${message}); using the recording partition: results below come from its memory map, no guest runs`,
    );
    return undefined;
  }
}

/**
 * Runs the scenario and returns what was seen. Throws (with everything
 * released) when guest memory cannot be built or a step fails outright.
 */
export function runScenario(options: DemoOptions): DemoReport {
  const notes: string[] = [];
  let x86Legacy = true;
  if (options.hugepages || options.privateMemory) {
    x86Legacy = false;
    notes.push(
      `${
        options.hugepages ? "--hugepages" : "--private"
      } rules out x86 legacy splitting: the PAM and VGA steps are skipped, the framebuffer goes into the MMIO gap`,
    );
  }
  using stack = new DisposableStack();
  const builder = new GuestMemoryBuilder()
    .x86LegacySupport(x86Legacy)
    .prefetchRam(options.prefetch)
    .privateMemory(options.privateMemory)
    .transparentHugepages(options.thp);
  if (options.hugepages) builder.hugepages();
  const manager = stack.use(builder.build(MemoryLayout.fromGaps(options.memorySize, [MMIO_GAP])));
  const memory = manager.client().guestMemory();

  const kvm = openKvm(notes, options.kvm, options.kvmDevice);
  let partition: Partition;
  let prober: Prober;
  let probe: GuestProbe | undefined;
  if (kvm !== undefined) {
    stack.use(kvm);
    partition = kvm;
    stack.use(manager.attachPartition(Vtl.Vtl0, kvm));
    probe = stack.use(GuestProbe.create(kvm));
    prober = new KvmProber(probe);
  } else {
    const recording = new RecordingPartition({ recordEvents: false });
    partition = recording;
    stack.use(manager.attachPartition(Vtl.Vtl0, recording));
    prober = new RecordingProber(recording, memory);
  }

  const pattern = new Uint8Array(Number(FRAMEBUFFER_SIZE));
  const patternView = new DataView(pattern.buffer);
  for (let o = 0; o < pattern.length; o += 4) {
    patternView.setUint32(o, framebufferWord(BigInt(o)), true);
  }
  const framebuffer = stack.use(
    SharedMemoryBacking.create(FRAMEBUFFER_SIZE, { name: FB_NAME, contents: pattern }),
  );
  const fbWord = (offset: bigint): number =>
    new DataView(framebuffer.read(offset, 4).buffer).getUint32(0, true);
  const snapshots: Snapshot[] = [];
  const snapshot = (label: string) =>
    snapshots.push({
      label,
      regions: regionRows(manager),
      slots: slotRows(partition, probe),
    });
  snapshot("after build and attach");

  const r = new Recorder(prober);
  const visibility = manager.ramVisibilityControl();
  const devices = manager.deviceMemoryMapper();

  r.step("RAM: the host writes, the guest reads");
  memory.writeU32(RAM_A, RAM_VALUE);
  r.action(`host writes ${hexValue(RAM_VALUE)} at ${hex(RAM_A)} through GuestMemory`);
  r.load(RAM_A, { kind: "value", value: RAM_VALUE });
  r.load(RAM_A + 2n, { kind: "value", value: RAM_VALUE >>> 16 }, 2);

  r.step("RAM: the guest writes, the host reads");
  r.store(RAM_A + 4n, GUEST_VALUE, { kind: "done" });
  r.host(`GuestMemory.readU32(${hex(RAM_A + 4n)})`, () => memory.readU32(RAM_A + 4n), GUEST_VALUE);

  r.step("MMIO gap: nothing is mapped there");
  r.load(MMIO_GAP.start, mmioRead(MMIO_GAP.start, 4));
  r.store(MMIO_GAP.start + 8n, 0x1234, mmioWrite(MMIO_GAP.start + 8n, 2, 0x1234), 2);

  const { control, region } = devices.newRegion(FRAMEBUFFER_SIZE, FB_NAME);
  stack.defer(() => control.unmapFromGuest());
  region.map(0n, framebuffer, 0n, FRAMEBUFFER_SIZE, true);

  if (x86Legacy) {
    r.step(`PAM ${PAM_PIECE} read-only`);
    memory.writeU32(PAM_ADDR, PAM_VALUE);
    r.action(`host writes ${hexValue(PAM_VALUE)} at ${hex(PAM_ADDR)}`);
    visibility.setRamVisibility(PAM_PIECE, RamVisibility.ReadOnly);
    r.action(`setRamVisibility(${PAM_PIECE}, ReadOnly)`);
    r.store(PAM_ADDR, 0xdeadbeef, mmioWrite(PAM_ADDR, 4, 0xdeadbeef));
    r.host(`GuestMemory.readU32(${hex(PAM_ADDR)})`, () => memory.readU32(PAM_ADDR), PAM_VALUE);
    r.load(PAM_ADDR, { kind: "value", value: PAM_VALUE });

    r.step(`PAM ${PAM_PIECE} unmapped`);
    visibility.setRamVisibility(PAM_PIECE, RamVisibility.Unmapped);
    r.action(`setRamVisibility(${PAM_PIECE}, Unmapped)`);
    r.load(PAM_ADDR, mmioRead(PAM_ADDR, 4));

    r.step(`PAM ${PAM_PIECE} read-write again`);
    visibility.setRamVisibility(PAM_PIECE, RamVisibility.ReadWrite);
    r.action(`setRamVisibility(${PAM_PIECE}, ReadWrite)`);
    r.load(PAM_ADDR, { kind: "value", value: PAM_VALUE });
    r.store(PAM_ADDR, 0x12345678, { kind: "done" });
    r.host(`GuestMemory.readU32(${hex(PAM_ADDR)})`, () => memory.readU32(PAM_ADDR), 0x12345678);

    const vgaAddr = VGA_WINDOW.start + 0x10n;
    const fbLast = VGA_WINDOW.start + FRAMEBUFFER_SIZE - 4n;
    r.step(`framebuffer (${new MemorySize(FRAMEBUFFER_SIZE)}) mapped under the VGA window`);
    memory.writeU32(vgaAddr, RAM_UNDER_VGA);
    r.action(`host writes ${hexValue(RAM_UNDER_VGA)} into RAM at ${hex(vgaAddr)}`);
    control.mapToGuest(VGA_WINDOW.start, true);
    r.action(`framebuffer memfd (word at offset o = 0xfb000000|o) mapped at ${VGA_WINDOW}`);
    r.load(vgaAddr, { kind: "value", value: RAM_UNDER_VGA });

    r.step("VGA window RAM unmapped: the framebuffer shows through");
    visibility.setRamVisibility(VGA_WINDOW, RamVisibility.Unmapped);
    r.action(`setRamVisibility(${VGA_WINDOW}, Unmapped)`);
    r.load(vgaAddr, { kind: "value", value: framebufferWord(0x10n) });
    r.load(fbLast, { kind: "value", value: framebufferWord(FRAMEBUFFER_SIZE - 4n) });
    r.store(VGA_WINDOW.start + 0x20n, 0x5eed5eed, { kind: "done" });
    r.host("framebuffer memfd word at 0x20", () => fbWord(0x20n), 0x5eed5eed);
    snapshot("with the framebuffer showing through the VGA window");

    r.step("VGA window RAM mapped again: RAM hides the framebuffer");
    visibility.setRamVisibility(VGA_WINDOW, RamVisibility.ReadWrite);
    r.action(`setRamVisibility(${VGA_WINDOW}, ReadWrite)`);
    r.load(vgaAddr, { kind: "value", value: RAM_UNDER_VGA });
  } else {
    const at = MMIO_GAP.start;
    r.step(`framebuffer (${new MemorySize(FRAMEBUFFER_SIZE)}) mapped in the MMIO gap`);
    control.mapToGuest(at, true);
    r.action(`framebuffer memfd (word at offset o = 0xfb000000|o) mapped at ${control.guestRange}`);
    r.load(at + 0x10n, { kind: "value", value: framebufferWord(0x10n) });
    r.load(at + FRAMEBUFFER_SIZE - 4n, {
      kind: "value",
      value: framebufferWord(FRAMEBUFFER_SIZE - 4n),
    });
    r.store(at + 0x20n, 0x5eed5eed, { kind: "done" });
    r.host("framebuffer memfd word at 0x20", () => fbWord(0x20n), 0x5eed5eed);
    snapshot("with the framebuffer in the MMIO gap");

    r.step("framebuffer unmapped from the guest");
    control.unmapFromGuest();
    r.action("control.unmapFromGuest()");
    r.load(at + 0x10n, mmioRead(at + 0x10n, 4));
  }

  r.step("checkpoint: dirty tracking on, RAM snapshotted, then the guest writes");
  const tracker = manager.dirtyTracker();
  tracker.start();
  const checkpoint = stack.use(GuestRamSnapshot.take(manager));
  r.action("dirtyTracker().start(), then GuestRamSnapshot.take(manager)");
  r.store(RAM_A, CHECKPOINT_GUEST, { kind: "done" });

  r.step("the host writes: the tracker reports the guest's page and the host's");
  memory.writeU32(RAM_B, CHECKPOINT_HOST);
  r.action(`host writes ${hexValue(CHECKPOINT_HOST)} at ${hex(RAM_B)} through GuestMemory`);
  r.action(`dirtyTracker().dirtyPages(): ${tracker.dirtyPages().map(hex).join(", ")}`);
  r.host(`GuestMemory.readU32(${hex(RAM_B)})`, () => memory.readU32(RAM_B), CHECKPOINT_HOST);

  r.step("reset to the checkpoint: only the dirty pages are copied back");
  const copied = checkpoint.restoreDirty(manager);
  r.action(`checkpoint.restoreDirty(manager): ${copied} pages copied`);
  r.action(`dirtyTracker().dirtyPages(): ${tracker.dirtyPages().length} pages`);
  r.load(RAM_A, { kind: "value", value: RAM_VALUE });
  r.host(`GuestMemory.readU32(${hex(RAM_B)})`, () => memory.readU32(RAM_B), 0);
  tracker.stop();

  const ok = r.steps.every((s) => s.observations.every((o) => o.ok));
  return {
    mode: prober.kind,
    memorySize: options.memorySize,
    mmioGap: MMIO_GAP,
    x86Legacy,
    options,
    notes,
    snapshots,
    steps: r.steps,
    ok,
  };
}
