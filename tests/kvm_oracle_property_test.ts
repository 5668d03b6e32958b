/**
 * The guest as an oracle for the region manager. Each run builds a small
 * x86 legacy manager with a KVM partition attached, applies a random
 * sequence of operations (RAM visibility changes, device memory placed,
 * moved, unplaced, mapped and unmapped) to it and to the naive reference
 * model (tests/support/region_model.ts, device memory mirrored by
 * tests/support/device_memory_model.ts), then lets a guest vCPU load from
 * and store to one address in every region boundary page: the last word of
 * the page before each region, the first word of its first page, the last
 * word of its last page and the first word of the page after it; the same
 * around every mapping inside a region.
 *
 * What the guest must see, from the model:
 * - nothing visible: an MMIO exit (load and store);
 * - a visible region without a mapping there: a memory fault;
 * - a mapping: the marker of exactly that backing and file offset (markers
 *   are written into every backing right before the loads);
 * - a store to a read-only region: an MMIO write exit, memory unchanged;
 *   to a writable region over a read-only mapping: a memory fault,
 *   memory unchanged; otherwise the store lands at that backing offset.
 *
 * MEMBACKING_ORACLE_SEED=<n> replays a run.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { GuestMemoryBuilder } from "../builder.ts";
import { Mman } from "../ffi/_constants.ts";
import { HostMapping } from "../ffi/_host_mapping.ts";
import type { OwnedFd } from "../ffi/_owned_fd.ts";
import { MemoryLayout } from "../layout/memory_layout.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { Vtl } from "../manager/vtl.ts";
import type { Mappable } from "../mapping/mappable.ts";
import { GuestProbe, type ProbeResult } from "../testing/guest_probe.ts";
import { KvmPartition } from "../kvm/kvm_partition.ts";
import type { DeviceMemory } from "../device_memory/device_memory_mapper.ts";
import { RamVisibility } from "../regions/ram_visibility_control.ts";
import { DeviceMemoryModel } from "./support/device_memory_model.ts";
import { ModelError, RegionModel } from "./support/region_model.ts";
import { openFdCount, skipWithoutKvm } from "./support/requirements.ts";
import { managerInternals } from "../manager/guest_memory_manager.ts";
import { shrinkSealedMemfd } from "./support/region_fixture.ts";

const PAGE = 0x1000n;
const RAM_SIZE = 4n << 20n;
/** Everything from the end of RAM to 4 GiB is MMIO; device memory goes there or under RAM. */
const GAP = new MemoryRange(RAM_SIZE, 1n << 32n);
const DEVICE_FILE_SIZE = 0x40000n;
/** Device lengths: the VGA window, a PAM piece, the BIOS area. */
const DEVICE_LENGTHS = [0x20000n, 0x4000n, 0x10000n] as const;
/** Places where a device fits (or nearly fits) the x86 legacy split or the gap. */
const PLACES = [
  0xa0000,
  0xb0000,
  0xc0000,
  0xc4000,
  0xc8000,
  0xe8000,
  0xec000,
  0xf0000,
  0x100000,
  0x3fc000,
  0x400000,
  0x404000,
  0x410000,
  0x420000,
] as const;
const RUNS = 200;
/** How each device is mapped at the start of a sequence. */
const INITIAL_DEVICE_MAPPINGS = [
  { file: 0, fileOffset: 0x0n, writable: true },
  { file: 1, fileOffset: 0x20000n, writable: true },
  { file: 1, fileOffset: 0x30000n, writable: false },
] as const;

type Op =
  | { k: "vis"; ram: number; v: RamVisibility }
  | { k: "place"; d: number; gpa: number; w: boolean }
  | { k: "unplace"; d: number }
  | { k: "map"; d: number; page: number; pages: number; file: number; filePage: number; w: boolean }
  | { k: "unmap"; d: number; page: number; pages: number };

const device = fc.integer({ min: 0, max: DEVICE_LENGTHS.length - 1 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant("vis" as const),
      ram: fc.integer({ min: 0, max: 15 }),
      v: fc.constantFrom(RamVisibility.Unmapped, RamVisibility.ReadOnly, RamVisibility.ReadWrite),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant("place" as const),
      d: device,
      gpa: fc.oneof(
        { weight: 3, arbitrary: fc.constantFrom(...PLACES) },
        { weight: 1, arbitrary: fc.integer({ min: 0, max: 0x4ff }).map((p) => p * 0x1000) },
      ),
      w: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("unplace" as const), d: device }) },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant("map" as const),
      d: device,
      page: fc.integer({ min: 0, max: 31 }),
      pages: fc.integer({ min: 1, max: 32 }),
      file: fc.integer({ min: 0, max: 1 }),
      filePage: fc.integer({ min: 0, max: 63 }),
      w: fc.boolean(),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant("unmap" as const),
      d: device,
      page: fc.integer({ min: 0, max: 31 }),
      pages: fc.integer({ min: 1, max: 32 }),
    }),
  },
);

/**
 * Offset and length of a device map/unmap, scaled to the device: pages
 * wrap around its page count, so most fit and some run past its end.
 */
function devicePages(op: { d: number; page: number; pages: number }): [bigint, bigint] {
  const count = Number(DEVICE_LENGTHS[op.d] / PAGE);
  return [BigInt(op.page % count) * PAGE, BigInt(1 + (op.pages - 1) % count) * PAGE];
}

/** The size of the pieces a device is mapped in at the start: 16 KiB, or half the device. */
function deviceChunk(d: number): bigint {
  const length = DEVICE_LENGTHS[d];
  return length / 2n < 0x4000n ? length / 2n : 0x4000n;
}

/** The marker at `fileOffset` of the backing tagged `tag`. */
function marker(tag: number, fileOffset: bigint): number {
  return ((tag << 28) | Number(fileOffset)) >>> 0;
}

function le32(value: number): Uint8Array {
  return new Uint8Array([value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, value >>> 24]);
}

/** Host views of the backings: fd -> tag and a DataView over the whole file. */
class Backings {
  readonly #views = new Map<number, { tag: number; data: DataView }>();

  add(fd: number, tag: number, mapping: HostMapping): void {
    const bytes = mapping.bytes();
    this.#views.set(fd, { tag, data: new DataView(bytes.buffer, bytes.byteOffset, bytes.length) });
  }

  #view(fd: number): { tag: number; data: DataView } {
    const view = this.#views.get(fd);
    assert.ok(view !== undefined, `unknown backing fd ${fd}`);
    return view;
  }

  marker(fd: number, fileOffset: bigint): number {
    return marker(this.#view(fd).tag, fileOffset);
  }

  read(fd: number, fileOffset: bigint): number {
    return this.#view(fd).data.getUint32(Number(fileOffset), true);
  }

  write(fd: number, fileOffset: bigint, value: number): void {
    this.#view(fd).data.setUint32(Number(fileOffset), value, true);
  }
}

/**
 * Runs `real` and `model`; both must succeed, or both refuse with the same
 * message. Returns whether they refused.
 */
function both(what: string, real: () => void, model: () => void): boolean {
  let realError: string | undefined;
  try {
    real();
  } catch (error) {
    if (!(error instanceof Error) || error instanceof TypeError) throw error;
    realError = error.message;
  }
  let modelError: string | undefined;
  try {
    model();
  } catch (error) {
    if (!(error instanceof ModelError)) throw error;
    modelError = error.message;
  }
  assert.equal(realError, modelError, `${what}: real and model disagree`);
  return realError !== undefined;
}

function probePoints(model: RegionModel, codePage: MemoryRange): bigint[] {
  const points = new Set<bigint>();
  // Both ends of every region and of every mapping in it, from just outside.
  const bounds = model.regions.flatMap((region) => [
    region.range,
    ...region.mappings.map((m) =>
      new MemoryRange(region.range.start + m.range.start, region.range.start + m.range.end)
    ),
  ]);
  for (const { start, end } of bounds) {
    for (const gpa of [start - 8n, start + 8n, end - 8n, end + 8n]) {
      if (gpa < 0n || gpa + 4n > model.addressSpace || gpa + 4n > 1n << 32n) continue;
      if (codePage.containsAddr(gpa)) continue;
      points.add(gpa);
    }
  }
  return [...points].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

const mmio = (gpa: bigint, isWrite: boolean, data: Uint8Array): ProbeResult => ({
  kind: "mmio",
  gpa,
  isWrite,
  size: 4,
  data: isWrite ? data : new Uint8Array(0),
});

/** What one probed address showed, for counting that every case comes up. */
type Outcome =
  | "mmio"
  | "hole"
  | "read-only region"
  | "read-only mapping"
  | "read-write"
  | "device"
  | "refused";

const ALL_OUTCOMES: readonly Outcome[] = [
  "mmio",
  "hole",
  "read-only region",
  "read-only mapping",
  "read-write",
  "device",
  "refused",
];

/** Checks one address with a load and a store against the model. */
function checkPoint(
  probe: GuestProbe,
  model: RegionModel,
  backings: Backings,
  gpa: bigint,
  seen: Map<Outcome, number>,
): void {
  const count = (outcome: Outcome) => seen.set(outcome, (seen.get(outcome) ?? 0) + 1);
  const where = `0x${gpa.toString(16)}`;
  const visible = model.visibleAt(gpa);
  const load = probe.load(gpa, 4);
  if (visible === undefined) {
    assert.deepEqual(
      load,
      mmio(gpa, false, new Uint8Array(0)),
      `load at ${where}: nothing visible`,
    );
    const value = 0x5a5a5a5a;
    assert.deepEqual(probe.store(gpa, 4, value), mmio(gpa, true, le32(value)), `store at ${where}`);
    count("mmio");
    return;
  }
  const backing = visible.backing;
  const context = `at ${where} (region ${visible.regionName} #${visible.regionId})`;
  if (backing === undefined) {
    assert.equal(load.kind, "memory_fault", `load ${context}: a hole in the mappings`);
    const store = probe.store(gpa, 4, 0x5a5a5a5a);
    if (visible.writable) assert.equal(store.kind, "memory_fault", `store ${context}`);
    else assert.deepEqual(store, mmio(gpa, true, le32(0x5a5a5a5a)), `store ${context}`);
    count("hole");
    return;
  }
  const expected = backings.marker(backing.fd, backing.fileOffset);
  assert.deepEqual(load, { kind: "value", value: expected }, `load ${context}`);
  if (visible.regionName !== "ram") count("device");
  const value = ~expected >>> 0;
  const store = probe.store(gpa, 4, value);
  if (!visible.writable) {
    assert.deepEqual(store, mmio(gpa, true, le32(value)), `store ${context}: read-only region`);
    count("read-only region");
  } else if (!backing.hostWritable) {
    assert.equal(store.kind, "memory_fault", `store ${context}: read-only mapping`);
    count("read-only mapping");
  } else {
    assert.deepEqual(store, { kind: "done" }, `store ${context}`);
    count("read-write");
    assert.equal(backings.read(backing.fd, backing.fileOffset), value, `stored ${context}`);
    backings.write(backing.fd, backing.fileOffset, expected);
    return;
  }
  assert.equal(backings.read(backing.fd, backing.fileOffset), expected, `unchanged ${context}`);
}

interface DeviceFiles {
  readonly files: readonly OwnedFd[];
  readonly views: readonly HostMapping[];
}

/** One run: a fresh manager and VM, `ops` on both sides, then the guest probes. */
function runSequence(ops: readonly Op[], devices: DeviceFiles, seen: Map<Outcome, number>): void {
  using stack = new DisposableStack();
  const layout = MemoryLayout.fromGaps(RAM_SIZE, [GAP]);
  const manager = stack.use(new GuestMemoryBuilder().x86LegacySupport(true).build(layout));
  const partition = stack.use(KvmPartition.create());
  stack.use(manager.attachPartition(Vtl.Vtl0, partition));
  const probe = stack.use(GuestProbe.create(partition));
  const codePage = MemoryRange.fromLength(probe.codeGpa, PAGE);

  // The model starts as a copy of the manager's regions (the x86 legacy RAM split).
  const model = new RegionModel(managerInternals(manager).va.size);
  const ramIds: number[] = [];
  const backings = new Backings();
  let ram: Mappable | undefined;
  for (const info of managerInternals(manager).regionManager.regionInfos()) {
    const id = model.newRegion(info.name, info.range, info.priority, info.dmaTarget);
    for (const m of info.mappings) {
      model.addMapping(id, m.range, m.backing, m.fileOffset, m.writable);
      ram ??= m.backing;
    }
    if (info.mapParams !== undefined) model.map(id, info.mapParams);
    ramIds.push(id);
  }
  assert.equal(ramIds.length, 16);
  assert.ok(ram !== undefined);
  const ramView = stack.use(
    HostMapping.shared(ram.fd, 0n, RAM_SIZE, Mman.PROT_READ | Mman.PROT_WRITE),
  );
  backings.add(ram.fd, 1, ramView);
  devices.files.forEach((file, i) => backings.add(file.fd, 2 + i, devices.views[i]));

  const visibility = manager.ramVisibilityControl();
  const mapper = manager.deviceMemoryMapper();
  const real: DeviceMemory[] = [];
  const modelled: DeviceMemoryModel[] = [];
  DEVICE_LENGTHS.forEach((length, i) => {
    const dev = mapper.newRegion(length, `dev${i}`);
    stack.defer(() => dev.control.unmapFromGuest());
    const mirror = new DeviceMemoryModel(model, `dev${i}`, length);
    // Each device starts fully mapped in chunks (dev2 read-only); unmaps punch holes.
    const { file, fileOffset, writable } = INITIAL_DEVICE_MAPPINGS[i];
    const chunk = deviceChunk(i);
    for (let offset = 0n; offset < length; offset += chunk) {
      dev.region.map(offset, devices.files[file], fileOffset + offset, chunk, writable);
      mirror.map(offset, devices.files[file], fileOffset + offset, chunk, writable);
    }
    real.push(dev);
    modelled.push(mirror);
  });

  const refused = (wasRefused: boolean) => {
    if (wasRefused) seen.set("refused", (seen.get("refused") ?? 0) + 1);
  };
  for (const op of ops) {
    switch (op.k) {
      case "vis": {
        const region = managerInternals(manager).ramRegions[op.ram];
        const id = ramIds[op.ram];
        refused(both(`setRamVisibility(${region.range}, ${op.v})`, () => {
          visibility.setRamVisibility(region.range, op.v);
        }, () => {
          if (op.v === RamVisibility.Unmapped) model.unmap(id);
          else {
            model.map(id, {
              writable: op.v === RamVisibility.ReadWrite,
              executable: true,
              prefetch: false,
            });
          }
        }));
        break;
      }
      case "place":
        refused(both(
          `dev${op.d}.mapToGuest(0x${op.gpa.toString(16)}, ${op.w})`,
          () => real[op.d].control.mapToGuest(BigInt(op.gpa), op.w),
          () => modelled[op.d].mapToGuest(BigInt(op.gpa), op.w),
        ));
        break;
      case "unplace":
        refused(both(
          `dev${op.d}.unmapFromGuest()`,
          () => real[op.d].control.unmapFromGuest(),
          () => modelled[op.d].unmapFromGuest(),
        ));
        break;
      case "map": {
        const [offset, length] = devicePages(op);
        // Stay inside the file: a mapping past its end would fault (SIGBUS).
        const fileOffset = BigInt(Math.min(op.filePage, 64 - Number(length / PAGE))) * PAGE;
        const file = devices.files[op.file];
        refused(both(
          `dev${op.d}.map(${offset}, file${op.file}, ${fileOffset}, ${length}, ${op.w})`,
          () => real[op.d].region.map(offset, file, fileOffset, length, op.w),
          () => modelled[op.d].map(offset, file, fileOffset, length, op.w),
        ));
        break;
      }
      case "unmap": {
        // In whole chunks of the initial mappings, so that most unmaps punch holes.
        const chunk = deviceChunk(op.d);
        const count = Number(DEVICE_LENGTHS[op.d] / chunk);
        const offset = BigInt(op.page % count) * chunk;
        const length = BigInt(1 + (op.pages - 1) % count) * chunk;
        refused(both(
          `dev${op.d}.unmap(${offset}, ${length})`,
          () => real[op.d].region.unmap(offset, length),
          () => modelled[op.d].unmap(offset, length),
        ));
        break;
      }
    }
  }

  // Markers into every backing offset the guest will look at, then the guest looks.
  const points = probePoints(model, codePage);
  for (const gpa of points) {
    const backing = model.visibleAt(gpa)?.backing;
    if (backing !== undefined) {
      backings.write(
        backing.fd,
        backing.fileOffset,
        backings.marker(backing.fd, backing.fileOffset),
      );
    }
  }
  for (const gpa of points) checkPoint(probe, model, backings, gpa, seen);
}

const seedText = Deno.env.get("MEMBACKING_ORACLE_SEED");
const seed = seedText === undefined ? undefined : Number(seedText);

/** The two device backing files (owned by `stack`) and a host view of each. */
function openBackings(stack: DisposableStack): { files: OwnedFd[]; views: HostMapping[] } {
  const files: OwnedFd[] = [];
  const views: HostMapping[] = [];
  for (const name of ["oracle-file0", "oracle-file1"]) {
    const file = stack.use(shrinkSealedMemfd(name, DEVICE_FILE_SIZE));
    files.push(file);
    views.push(
      stack.use(
        HostMapping.shared(file.fd, 0n, DEVICE_FILE_SIZE, Mman.PROT_READ | Mman.PROT_WRITE),
      ),
    );
  }
  return { files, views };
}

Deno.test({
  name: "KVM oracle: the guest sees what the region model says after random operations",
  ignore: skipWithoutKvm(),
  fn: () => {
    const fdsBefore = openFdCount();
    using stack = new DisposableStack();
    const { files, views } = openBackings(stack);
    let runs = 0;
    const seen = new Map<Outcome, number>();
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 14 }), (ops) => {
        runs++;
        runSequence(ops, { files, views }, seen);
      }),
      { numRuns: RUNS, seed },
    );
    assert.ok(runs >= RUNS, `${runs} sequences`);
    // The random sequences reach every kind of observation, many times over.
    for (const outcome of ALL_OUTCOMES) {
      assert.ok((seen.get(outcome) ?? 0) >= 5, `${outcome}: ${JSON.stringify([...seen])}`);
    }
    stack.dispose();
    assert.equal(openFdCount(), fdsBefore);
  },
});

Deno.test({
  name: "KVM oracle: a fixed sequence with every kind of observation",
  ignore: skipWithoutKvm(),
  fn: () => {
    using stack = new DisposableStack();
    const { files, views } = openBackings(stack);
    // VGA RAM unmapped over a half-mapped device (value + memory fault), a
    // read-only PAM piece (MMIO write), a read-only device mapping in the gap
    // (memory fault on store), and a refused placement.
    const ops: Op[] = [
      { k: "unmap", d: 0, page: 4, pages: 4 },
      { k: "place", d: 0, gpa: 0xa0000, w: true },
      { k: "vis", ram: 1, v: RamVisibility.Unmapped },
      { k: "vis", ram: 2, v: RamVisibility.ReadOnly },
      { k: "place", d: 2, gpa: 0x400000, w: true },
      { k: "place", d: 1, gpa: 0x3fe000, w: false },
    ];
    const seen = new Map<Outcome, number>();
    runSequence(ops, { files, views }, seen);
    assert.deepEqual([...seen.keys()].sort(), [...ALL_OUTCOMES].sort());
  },
});
