/**
 * Random region scenarios: operations on the real region manager and on
 * the naive model (region_model.ts), compared after every step: errors,
 * the recording partition's map and events, DMA events, the VA table and
 * the host protections in /proc/self/maps. Used by the model test and,
 * with every system call of every operation failing once, by the
 * fault-injection test.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { MemoryRange } from "../../layout/memory_range.ts";
import type { Mappable } from "../../mapping/mappable.ts";
import type { MapParams } from "../../regions/_map_params.ts";
import type { DeviceMemory } from "../../device_memory/device_memory_mapper.ts";
import type { DmaTarget } from "../../regions/dma_target.ts";
import type { DmaTargetHandle } from "../../regions/_region_manager.ts";
import type { RegionHandle } from "../../regions/_region_handle.ts";
import { RamVisibility } from "../../regions/ram_visibility_control.ts";
import { splitX86LegacyRam } from "../../regions/_x86_legacy.ts";
import { vaProtections } from "./proc_maps.ts";
import { RegionFixture } from "./region_fixture.ts";
import { dmaMapEvent, type ModelEvents, partitionMapEvent, RegionModel } from "./region_model.ts";
import { newDeviceMemoryMapper } from "../../device_memory/device_memory_mapper.ts";
import { newRamVisibilityControl } from "../../regions/ram_visibility_control.ts";

const PAGE = 0x1000n;

/** One random operation of a scenario. */
export type Op =
  | { k: "add"; start: number; len: number; prio: number; dma: boolean }
  | { k: "map"; i: number; w: boolean; x: boolean; p: boolean }
  | { k: "unmap"; i: number }
  | { k: "remove"; i: number }
  | { k: "addMapping"; i: number; start: number; len: number; off: number; w: boolean }
  | { k: "removeMappings"; i: number; start: number; len: number }
  | { k: "dmaAdd" }
  | { k: "dmaRemove" }
  | { k: "vis"; piece: number; vis: number; bad: number }
  | { k: "devNew"; len: number }
  | { k: "devMap"; d: number; off: number; len: number; foff: number; w: boolean }
  | { k: "devUnmap"; d: number; off: number; len: number }
  | { k: "devPlace"; d: number; gpa: number; w: boolean }
  | { k: "devUnplace"; d: number };

/** Random operations over `pages` pages (RAM visibility ones with `x86`). */
export function opArbitrary(pages: number, x86: boolean): fc.Arbitrary<Op> {
  const page = fc.integer({ min: 0, max: pages - 1 });
  const len = fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 0, max: 8 }) },
    { weight: 3, arbitrary: fc.integer({ min: 9, max: 32 }) },
    { weight: 1, arbitrary: fc.constant(pages) },
  );
  const i = fc.nat(1000);
  const prio = fc.constantFrom(0, 1, 1, 2, 2, 3, 255);
  const ops: fc.WeightedArbitrary<Op>[] = [
    {
      weight: 6,
      arbitrary: fc.record({ k: fc.constant("add"), start: page, len, prio, dma: fc.boolean() }),
    },
    {
      weight: 8,
      arbitrary: fc.record({
        k: fc.constant("map"),
        i,
        w: fc.boolean(),
        x: fc.boolean(),
        p: fc.boolean(),
      }),
    },
    { weight: 4, arbitrary: fc.record({ k: fc.constant("unmap"), i }) },
    { weight: 2, arbitrary: fc.record({ k: fc.constant("remove"), i }) },
    {
      weight: 6,
      arbitrary: fc.record({
        k: fc.constant("addMapping"),
        i,
        start: fc.nat(16),
        len: fc.integer({ min: 0, max: 16 }),
        off: fc.nat(63),
        w: fc.boolean(),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        k: fc.constant("removeMappings"),
        i,
        start: fc.nat(16),
        len: fc.integer({ min: 0, max: 16 }),
      }),
    },
    { weight: 1, arbitrary: fc.constant({ k: "dmaAdd" as const }) },
    { weight: 1, arbitrary: fc.constant({ k: "dmaRemove" as const }) },
    {
      weight: 1,
      arbitrary: fc.record({ k: fc.constant("devNew"), len: fc.integer({ min: 1, max: 16 }) }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        k: fc.constant("devMap"),
        d: i,
        off: fc.nat(16),
        len: fc.integer({ min: 0, max: 8 }),
        foff: fc.nat(63),
        w: fc.boolean(),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        k: fc.constant("devUnmap"),
        d: i,
        off: fc.nat(16),
        len: fc.integer({ min: 0, max: 16 }),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({ k: fc.constant("devPlace"), d: i, gpa: page, w: fc.boolean() }),
    },
    { weight: 1, arbitrary: fc.record({ k: fc.constant("devUnplace"), d: i }) },
  ];
  if (x86) {
    ops.push({
      weight: 10,
      arbitrary: fc.record({
        k: fc.constant("vis"),
        piece: fc.nat(15),
        vis: fc.nat(2),
        bad: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, {
          weight: 2,
          arbitrary: fc.nat(3),
        }),
      }),
    });
  }
  return fc.oneof(...ops);
}

/** A DMA target logging canonical strings. */
export class LogTarget implements DmaTarget {
  readonly log: string[] = [];
  /** What the target has mapped now, by range: the net effect of its log. */
  readonly mapped: Map<string, { range: MemoryRange; event: string }> = new Map();
  mapDma(range: MemoryRange, host: bigint | undefined, backing: Mappable, off: bigint, w: boolean) {
    const event = dmaMapEvent(range, backing.fd, off, w);
    this.log.push(event);
    if (host !== undefined && host !== this.base + range.start) this.log.push("bad host address");
    if ([...this.mapped.values()].some((m) => m.range.overlaps(range))) {
      this.log.push(`map over a mapped range ${range}`);
    }
    this.mapped.set(`${range}`, { range, event });
  }
  unmapDma(range: MemoryRange) {
    this.log.push(`unmap ${range}`);
    for (const [key, m] of this.mapped) if (range.contains(m.range)) this.mapped.delete(key);
  }
  /** The mapped ranges, sorted. */
  state(): string[] {
    return [...this.mapped.values()].map((m) => m.event).sort();
  }
  constructor(readonly base: bigint) {}
}

interface DeviceSlot {
  readonly name: string;
  readonly len: bigint;
  readonly real: DeviceMemory;
  mappings: { range: MemoryRange; foff: bigint; w: boolean }[];
  placed: { id: number; range: MemoryRange; w: boolean } | undefined;
}

const sorted = (list: string[]) => [...list].sort();
const VIS = [RamVisibility.Unmapped, RamVisibility.ReadOnly, RamVisibility.ReadWrite] as const;

/**
 * How a scenario runs each real operation: `attempt(run, snapshot)` calls
 * `run` (maybe more than once, with faults injected) and ends by returning
 * or throwing as the last, unfaulted run did. `snapshot` gives the whole
 * observable state (region tree, VA table, host protections, partition map,
 * DMA targets' mappings, device regions); `clearLogs` forgets the events
 * of runs that are not the last.
 */
export interface ScenarioHooks {
  attempt(run: () => void, snapshot: () => unknown, clearLogs: () => void, where: string): void;
  /** More state for the snapshot (a KVM partition's slots). */
  extraState?(): unknown;
  /** Called once the fixture is made (to attach more partitions). */
  setup?(fixture: RegionFixture): void;
  /** More checks after every step (a KVM partition's slots against the model). */
  check?(fixture: RegionFixture, where: string): void;
}

/**
 * Runs `ops` against both sides, comparing after every step. Returns the
 * number of ops run.
 */
export function runScenario(
  ops: Op[],
  pages: number,
  x86: boolean,
  hooks?: ScenarioHooks,
): number {
  const size = BigInt(pages) * PAGE;
  using f = new RegionFixture(size);
  hooks?.setup?.(f);
  // Room for every file offset the generators produce (RAM is packed from 0).
  f.backing.truncate(size + 0x100000n);
  const model = new RegionModel(size);
  const target = new LogTarget(f.va.base);
  const targets: { handle: DmaTargetHandle; log: string[] }[] = [];
  const firstHandle = f.manager.addDmaTarget(target, true);
  targets.push({ handle: firstHandle, log: target.log });
  let extraTarget: { handle: DmaTargetHandle; target: LogTarget } | undefined;
  const regions: { id: number; handle: RegionHandle }[] = [];
  const devices: DeviceSlot[] = [];
  const mapper = newDeviceMemoryMapper(f.manager);
  const fd = f.backing;

  // x86: RAM pieces at 255, DMA, packed in the backing, mapped.
  const ram: { id: number; range: MemoryRange; handle: RegionHandle }[] = [];
  if (x86) {
    let off = 0n;
    for (const range of splitX86LegacyRam(new MemoryRange(0n, size))) {
      const handle = f.manager.newRegion("ram", range, 255, true);
      const id = model.newRegion("ram", range, 255, true);
      handle.addMapping(new MemoryRange(0n, range.len), fd, off, true);
      model.addMapping(id, new MemoryRange(0n, range.len), fd, off, true);
      const params = { writable: true, executable: true, prefetch: false };
      handle.map(params);
      model.map(id, params);
      ram.push({ id, range, handle });
      off += range.len;
    }
  }
  const control = newRamVisibilityControl(ram);
  // Start each scenario with empty logs (the RAM setup is not under test here).
  model.takeEvents();
  f.partition.clearEvents();
  target.log.length = 0;

  // Compares what was thrown: both or neither, same message.
  const both = (real: () => void, expected: () => void): void => {
    let expectedError: Error | undefined;
    try {
      expected();
    } catch (e) {
      expectedError = e as Error;
    }
    let realError: Error | undefined;
    try {
      if (hooks === undefined) real();
      else {hooks.attempt(
          real,
          snapshot,
          clearLogs,
          `step ${step} ${JSON.stringify(ops[step - 1])}`,
        );}
    } catch (e) {
      realError = e as Error;
    }
    if (realError instanceof assert.AssertionError) throw realError;
    assert.equal(realError?.message, expectedError?.message);
  };

  // The whole observable state, for the fault-injection test.
  const snapshot = () => ({
    tree: f.manager.inspect(),
    va: f.va.entries().map((e) => `${e.range} ${e.fd} ${e.fileOffset} ${e.writable} ${e.kind}`),
    protections: vaProtections(f.va.base, f.va.size).map((p) =>
      `${new MemoryRange(p.start, p.end)} ${p.perms}`
    ),
    partition: f.partition.mappings().map((m) =>
      `${MemoryRange.fromLength(m.gpa, m.size)} ${m.writable} ${m.executable} ${m.hostAddress}`
    ),
    dma: [target, ...(extraTarget === undefined ? [] : [extraTarget.target])].map((t) => t.state()),
    // A balanced log: no target was told to map what it already had.
    dmaAnomalies: targets.flatMap((t) =>
      t.log.filter((l) => l.startsWith("map over") || l === "bad host address")
    ),
    devices: devices.map((d) => ({
      mappings: d.real.region.mappings.map((m) => `${m.range} ${m.fileOffset} ${m.writable}`),
    })),
    active: regions.map(({ handle }) => handle.isActive),
    extra: hooks?.extraState?.(),
  });
  const clearLogs = () => {
    f.partition.clearEvents();
    for (const t of targets) t.log.length = 0;
  };

  const check = (step: number, op: Op) => {
    const events: ModelEvents = model.takeEvents();
    const where = `step ${step} ${JSON.stringify(op)}`;
    const partitionEvents = f.partition.events.map((e) =>
      e.kind === "map"
        ? partitionMapEvent(MemoryRange.fromLength(e.gpa, e.size), {
          writable: e.writable,
          executable: e.executable,
          prefetch: false,
        })
        : `${e.kind} ${MemoryRange.fromLength(e.gpa, e.size)}`
    );
    f.partition.clearEvents();
    assert.deepEqual(
      sorted(partitionEvents),
      sorted(events.partition),
      `partition events, ${where}`,
    );
    for (const t of targets) {
      assert.deepEqual(sorted(t.log), sorted(events.dma), `dma events, ${where}`);
      t.log.length = 0;
    }
    const map = f.partition.mappings().map((m) => {
      assert.equal(m.hostAddress, f.va.base + m.gpa);
      return partitionMapEvent(MemoryRange.fromLength(m.gpa, m.size), { ...m, prefetch: false });
    });
    assert.deepEqual(map, model.expectedPartitionMap(), `partition map, ${where}`);
    // The VA table, merged where contiguous.
    const va: string[] = [];
    let last: { start: bigint; end: bigint; fd: number; off: bigint; w: boolean } | undefined;
    for (const e of f.va.entries()) {
      if (
        last !== undefined && last.end === e.range.start && last.fd === e.fd &&
        last.w === e.writable &&
        last.off + (last.end - last.start) === e.fileOffset
      ) {
        last.end = e.range.end;
        va[va.length - 1] = `${new MemoryRange(
          last.start,
          last.end,
        )} ${last.fd} ${last.off} ${last.w}`;
      } else {
        last = {
          start: e.range.start,
          end: e.range.end,
          fd: e.fd,
          off: e.fileOffset,
          w: e.writable,
        };
        va.push(`${e.range} ${e.fd} ${e.fileOffset} ${e.writable}`);
      }
    }
    assert.deepEqual(
      va,
      model.expectedVa(size).map((e) => `${e.range} ${e.fd} ${e.fileOffset} ${e.writable}`),
      `va entries, ${where}`,
    );
    const protections = vaProtections(f.va.base, f.va.size).map((p) =>
      `${new MemoryRange(p.start, p.end)} ${p.perms}`
    );
    assert.deepEqual(
      protections,
      model.expectedProtections(size).map((p) => `${new MemoryRange(p.start, p.end)} ${p.perms}`),
      `host protections, ${where}`,
    );
    for (const { id, handle } of regions) {
      assert.equal(handle.isActive, model.isActive(model.region(id)), `active flag, ${where}`);
    }
    hooks?.check?.(f, where);
  };

  const range = (start: number, len: number) =>
    MemoryRange.fromLength(BigInt(start) * PAGE, BigInt(len) * PAGE);

  let step = 0;
  let executed = 0;
  for (const op of ops) {
    step++;
    const pick = <T>(list: T[], i: number): T | undefined => list[i % Math.max(list.length, 1)];
    switch (op.k) {
      case "add": {
        const len = Math.min(op.len, pages - op.start);
        const r = range(op.start, len);
        const name = `r${step}`;
        let handle: RegionHandle | undefined;
        let id: number | undefined;
        both(() => {
          handle = f.manager.newRegion(name, r, op.prio, op.dma);
        }, () => {
          id = model.newRegion(name, r, op.prio, op.dma);
        });
        if (handle !== undefined && id !== undefined) regions.push({ id, handle });
        break;
      }
      case "map": {
        const entry = pick(regions, op.i);
        if (entry === undefined) continue;
        const params: MapParams = { writable: op.w, executable: op.x, prefetch: op.p };
        both(() => entry.handle.map(params), () => model.map(entry.id, params));
        break;
      }
      case "unmap": {
        const entry = pick(regions, op.i);
        if (entry === undefined) continue;
        both(() => entry.handle.unmap(), () => model.unmap(entry.id));
        break;
      }
      case "remove": {
        const entry = pick(regions, op.i);
        if (entry === undefined) continue;
        both(() => entry.handle[Symbol.dispose](), () => model.remove(entry.id));
        regions.splice(regions.indexOf(entry), 1);
        break;
      }
      case "addMapping": {
        const entry = pick(regions, op.i);
        if (entry === undefined) continue;
        const r = range(op.start, op.len);
        const off = BigInt(op.off) * PAGE;
        both(
          () => entry.handle.addMapping(r, fd, off, op.w),
          () => model.addMapping(entry.id, r, fd, off, op.w),
        );
        break;
      }
      case "removeMappings": {
        const entry = pick(regions, op.i);
        if (entry === undefined) continue;
        const r = range(op.start, op.len);
        both(() => entry.handle.removeMappings(r), () => model.removeMappings(entry.id, r));
        break;
      }
      case "dmaAdd": {
        if (extraTarget !== undefined) continue;
        const t = new LogTarget(f.va.base);
        const handle = f.manager.addDmaTarget(t, false);
        assert.deepEqual(t.log.map((l) => l), model.dmaReplay(), `dma replay, step ${step}`);
        t.log.length = 0;
        extraTarget = { handle, target: t };
        targets.push({ handle, log: t.log });
        break;
      }
      case "dmaRemove": {
        if (extraTarget === undefined) continue;
        const t = extraTarget;
        targets.splice(targets.findIndex((x) => x.handle === t.handle), 1);
        t.handle[Symbol.dispose]();
        assert.deepEqual(t.target.log, model.dmaRemoval(), `dma removal, step ${step}`);
        extraTarget = undefined;
        break;
      }
      case "vis": {
        if (!x86) continue;
        const piece = ram[op.piece];
        const visibility = VIS[op.vis];
        let r = piece.range;
        if (op.bad === 1) r = new MemoryRange(r.start, r.end + PAGE);
        if (op.bad === 2) r = new MemoryRange(r.start, r.start + PAGE);
        if (op.bad === 3) r = new MemoryRange(r.start + PAGE, r.end + PAGE);
        both(() => control.setRamVisibility(r, visibility), () => {
          if (!r.equals(piece.range)) throw new Error(`${r} is not a controllable RAM range`);
          if (visibility === RamVisibility.Unmapped) model.unmap(piece.id);
          else {
            model.map(piece.id, {
              writable: visibility === RamVisibility.ReadWrite,
              executable: true,
              prefetch: false,
            });
          }
        });
        break;
      }
      case "devNew": {
        const name = `dev${step}`;
        const len = BigInt(op.len) * PAGE;
        devices.push({
          name,
          len,
          real: mapper.newRegion(len, name),
          mappings: [],
          placed: undefined,
        });
        break;
      }
      case "devMap": {
        const dev = pick(devices, op.d);
        if (dev === undefined) continue;
        const r = range(op.off, op.len);
        const foff = BigInt(op.foff) * PAGE;
        both(() => dev.real.region.map(r.start, fd, foff, r.len, op.w), () => {
          if (r.end > dev.len) {
            throw new Error(
              `range ${r} is outside device memory region ${dev.name} (0x${
                dev.len.toString(16)
              } bytes)`,
            );
          }
          if (r.isEmpty()) return;
          const clash = dev.mappings.filter((m) => m.range.overlaps(r))
            .sort((a, b) => a.range.compare(b.range))[0];
          if (clash !== undefined) {
            throw new Error(
              `mapping ${r} overlaps mapping ${clash.range} in device memory region ${dev.name}`,
            );
          }
          if (dev.placed !== undefined) model.addMapping(dev.placed.id, r, fd, foff, op.w);
          dev.mappings.push({ range: r, foff, w: op.w });
        });
        break;
      }
      case "devUnmap": {
        const dev = pick(devices, op.d);
        if (dev === undefined) continue;
        const r = range(op.off, op.len);
        both(() => dev.real.region.unmap(r.start, r.len), () => {
          if (r.end > dev.len) {
            throw new Error(
              `range ${r} is outside device memory region ${dev.name} (0x${
                dev.len.toString(16)
              } bytes)`,
            );
          }
          const touched = dev.mappings.filter((m) => m.range.overlaps(r))
            .sort((a, b) => a.range.compare(b.range));
          const partial = touched.find((m) => !r.contains(m.range));
          if (partial !== undefined) {
            throw new Error(
              `mapping ${partial.range} of device memory region ${dev.name} is only partly inside ${r}`,
            );
          }
          if (touched.length === 0) return;
          if (dev.placed !== undefined) model.removeMappings(dev.placed.id, r);
          dev.mappings = dev.mappings.filter((m) => !touched.includes(m));
        });
        break;
      }
      case "devPlace": {
        const dev = pick(devices, op.d);
        if (dev === undefined) continue;
        const r = MemoryRange.fromLength(BigInt(op.gpa) * PAGE, dev.len);
        const params = (w: boolean): MapParams => ({
          writable: w,
          executable: true,
          prefetch: false,
        });
        const place = (where: MemoryRange, w: boolean) => {
          const id = model.newRegion(dev.name, where, 0, false);
          for (const m of dev.mappings) model.addMapping(id, m.range, fd, m.foff, m.w);
          model.map(id, params(w));
          dev.placed = { id, range: where, w };
        };
        both(() => dev.real.control.mapToGuest(r.start, op.w), () => {
          const old = dev.placed;
          if (old !== undefined && old.range.equals(r)) {
            model.map(old.id, params(op.w));
            dev.placed = { ...old, w: op.w };
            return;
          }
          const oldRegion = old === undefined ? undefined : model.region(old.id);
          // A refused placement is found before the region leaves its old place.
          if (old !== undefined) model.checkMove(old.id, r);
          if (old !== undefined) model.remove(old.id);
          dev.placed = undefined;
          try {
            place(r, op.w);
          } catch (e) {
            // A failed move puts the old region back in its old place.
            if (old !== undefined && oldRegion !== undefined) {
              model.restore(oldRegion);
              model.map(old.id, params(old.w));
              dev.placed = old;
            }
            throw e;
          }
        });
        break;
      }
      case "devUnplace": {
        const dev = pick(devices, op.d);
        if (dev === undefined) continue;
        both(() => dev.real.control.unmapFromGuest(), () => {
          if (dev.placed !== undefined) model.remove(dev.placed.id);
          dev.placed = undefined;
        });
        break;
      }
    }
    executed++;
    check(step, op);
  }
  firstHandle[Symbol.dispose]();
  return executed;
}
