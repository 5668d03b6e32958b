import assert from "node:assert/strict";
import { GuestMemoryBuilder, PRIVATE_RAM_NAME } from "../builder.ts";
import { setWarningHandler, type Warning } from "../diagnostics/warnings.ts";
import { HostMapping } from "../ffi/_host_mapping.ts";
import { readTextFile } from "../ffi/_proc_files.ts";
import { SyscallError } from "../ffi/syscall_error.ts";
import { setAnonVmaName, tryAnonVmaName } from "../ffi/_system.ts";
import { MemoryLayout } from "../layout/memory_layout.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { VaMapper } from "../mapping/_va_mapper.ts";
import { vaProtections } from "./support/proc_maps.ts";
import { managerInternals } from "../manager/guest_memory_manager.ts";
import { shrinkSealedMemfd } from "./support/region_fixture.ts";

const MiB = 1n << 20n;

/** Whether this kernel names anonymous mappings (CONFIG_ANON_VMA_NAME). */
function anonVmaNamesSupported(): boolean {
  using scratch = HostMapping.anonymous(0x1000n, true);
  try {
    setAnonVmaName(scratch.address, 0x1000n, "probe");
    return true;
  } catch {
    return false;
  }
}

/** The system-wide THP mode: always, madvise or never. */
function thpMode(): string {
  try {
    const text = readTextFile("/sys/kernel/mm/transparent_hugepage/enabled");
    return /\[(\w+)\]/.exec(text)?.[1] ?? "never";
  } catch {
    return "never";
  }
}

/** The /proc/self/smaps block of the mapping that starts at `address`. */
function smapsBlock(address: bigint): string[] {
  const lines = readTextFile("/proc/self/smaps").split("\n");
  const start = lines.findIndex((l) => l.startsWith(`${address.toString(16)}-`));
  assert.ok(start >= 0, `no mapping starts at 0x${address.toString(16)}`);
  let end = start + 1;
  while (end < lines.length && !/^[0-9a-f]+-[0-9a-f]+ /.test(lines[end])) end++;
  return lines.slice(start, end);
}

/** The header line of the mapping that starts at `address`, split into fields. */
function header(address: bigint): { end: bigint; perms: string; name: string } {
  const fields = smapsBlock(address)[0].split(/\s+/);
  return {
    end: BigInt(`0x${fields[0].split("-")[1]}`),
    perms: fields[1],
    name: fields.slice(5).join(" "),
  };
}

function thpEligible(address: bigint): number {
  const line = smapsBlock(address).find((l) => l.startsWith("THPeligible:"));
  assert.ok(line !== undefined, "smaps has no THPeligible field");
  return Number(line.split(/\s+/)[1]);
}

const LAYOUT = MemoryLayout.fromGaps(8n * MiB, [new MemoryRange(4n * MiB, 8n * MiB)], {
  vtl2Range: new MemoryRange(16n * MiB, 20n * MiB),
});
const RAM = ["0x0-0x400000", "0x800000-0xc00000", "0x1000000-0x1400000"];

Deno.test("private memory mode", async (t) => {
  const names = anonVmaNamesSupported();

  await t.step("each RAM range is private anonymous memory at base + gpa", () => {
    using manager = new GuestMemoryBuilder().privateMemory(true).build(LAYOUT);
    const va = managerInternals(manager).va;
    assert.deepEqual(va.entries().map((e) => `${e.range}`), RAM);
    for (const entry of va.entries()) {
      assert.equal(entry.kind, "private");
      assert.equal(entry.hostAddress, va.base + entry.range.start);
      const line = header(entry.hostAddress);
      assert.equal(line.end, va.base + entry.range.end);
      assert.equal(line.perms, "rw-p");
    }
    // The MMIO gap between them stays inaccessible.
    assert.equal(header(va.base + 4n * MiB).perms, "---p");
    // The regions are mapped but carry no file mappings.
    for (const { handle } of managerInternals(manager).ramRegions) {
      assert.equal(handle.isActive, true);
      assert.deepEqual(handle.mappings, []);
    }
    const memory = manager.client().guestMemory();
    assert.equal(memory.readU32(0x800000n), 0);
    memory.writeU32(0x1000000n, 0xabcdef01);
    assert.equal(memory.readU32(0x1000000n), 0xabcdef01);
  });

  await t.step(`every RAM range is allocated under the name ${PRIVATE_RAM_NAME}`, () => {
    const real = VaMapper.prototype.allocPrivate;
    const calls: string[] = [];
    VaMapper.prototype.allocPrivate = function (range, name) {
      calls.push(`${range} ${name}`);
      return real.call(this, range, name);
    };
    try {
      using _manager = new GuestMemoryBuilder().privateMemory(true).build(LAYOUT);
    } finally {
      VaMapper.prototype.allocPrivate = real;
    }
    assert.deepEqual(calls, RAM.map((range) => `${range} guest-ram-private`));
  });

  await t.step(`named ${PRIVATE_RAM_NAME} in /proc/self/maps where the kernel names VMAs`, () => {
    using manager = new GuestMemoryBuilder().privateMemory(true).build(LAYOUT);
    for (const entry of managerInternals(manager).va.entries()) {
      const { name } = header(entry.hostAddress);
      if (names) {
        assert.equal(name, `[anon:${PRIVATE_RAM_NAME}]`);
      } else {
        // Kernels built without CONFIG_ANON_VMA_NAME refuse names with
        // EINVAL; the builder goes on and the RAM stays unnamed.
        assert.equal(name, "");
        assert.throws(
          () => setAnonVmaName(entry.hostAddress, entry.range.len, PRIVATE_RAM_NAME),
          (e: unknown) => e instanceof SyscallError && e.code === "EINVAL",
        );
      }
      // The builder's form reports the same answer without an error.
      assert.equal(tryAnonVmaName(entry.hostAddress, entry.range.len, PRIVATE_RAM_NAME), names);
    }
  });

  await t.step({
    name: "transparent hugepages: every RAM range is THP-eligible",
    ignore: thpMode() === "never",
    fn: () => {
      const warnings: Warning[] = [];
      const previous = setWarningHandler((w) => warnings.push(w));
      try {
        using manager = new GuestMemoryBuilder().privateMemory(true).transparentHugepages(true)
          .build(LAYOUT);
        assert.equal(managerInternals(manager).va.base % (2n * MiB), 0n);
        for (const entry of managerInternals(manager).va.entries()) {
          assert.equal(thpEligible(entry.hostAddress), 1, `${entry.range}`);
          assert.equal(
            header(entry.hostAddress).end,
            managerInternals(manager).va.base + entry.range.end,
          );
        }
        assert.deepEqual(warnings, []);
      } finally {
        setWarningHandler(previous);
      }
    },
  });

  await t.step({
    name: "without transparent hugepages, RAM is not THP-eligible in madvise mode",
    ignore: thpMode() !== "madvise",
    fn: () => {
      using manager = new GuestMemoryBuilder().privateMemory(true).build(LAYOUT);
      for (const entry of managerInternals(manager).va.entries()) {
        assert.equal(thpEligible(entry.hostAddress), 0, `${entry.range}`);
      }
    },
  });

  await t.step("THP advice refused by the kernel is only a warning", () => {
    const real = VaMapper.prototype.adviseHugepages;
    const refusal = new Error("madvise refused");
    VaMapper.prototype.adviseHugepages = () => {
      throw refusal;
    };
    const warnings: Warning[] = [];
    const previous = setWarningHandler((w) => warnings.push(w));
    try {
      using manager = new GuestMemoryBuilder().privateMemory(true).transparentHugepages(true)
        .build(LAYOUT);
      assert.equal(managerInternals(manager).va.entries().length, 3);
    } finally {
      VaMapper.prototype.adviseHugepages = real;
      setWarningHandler(previous);
    }
    assert.deepEqual(
      warnings,
      RAM.map((range) => ({
        message: `failed to mark RAM range ${range} as THP eligible`,
        cause: refusal,
      })),
    );
  });

  await t.step("disposal returns the whole range to the kernel", () => {
    const manager = new GuestMemoryBuilder().privateMemory(true).build(LAYOUT);
    const { base, size } = managerInternals(manager).va;
    assert.equal(vaProtections(base, size).length, 5);
    manager[Symbol.dispose]();
    assert.deepEqual(vaProtections(base, size), []);
  });
});

Deno.test("private RAM comes back after device memory over it is unmapped", async () => {
  const { RamVisibility } = await import("../regions/ram_visibility_control.ts");
  const ram = new MemoryRange(0n, 16n * MiB);
  using manager = new GuestMemoryBuilder().privateMemory(true).build(
    MemoryLayout.fromGaps(16n * MiB, []),
  );
  const memory = manager.client().guestMemory();
  memory.writeU32(0x200000, 0x600dcafe);

  using framebuffer = shrinkSealedMemfd("framebuffer", 0x1000n);
  const { control, region } = manager.deviceMemoryMapper().newRegion(0x1000n, "fb");
  using _control = control;
  region.map(0n, framebuffer, 0n, 0x1000n, true);

  // RAM hidden: the device page shows at 0x100000, private RAM elsewhere stays.
  manager.ramVisibilityControl().setRamVisibility(ram, RamVisibility.Unmapped);
  control.mapToGuest(0x100000n, true);
  memory.writeU32(0x100000, 0xfb000000);
  assert.equal(memory.readU32(0x200000), 0x600dcafe);

  // RAM mapped again: the device page goes and RAM is usable there again
  // (zero-filled: the device mapping had replaced those anonymous pages).
  manager.ramVisibilityControl().setRamVisibility(ram, RamVisibility.ReadWrite);
  assert.equal(memory.readU32(0x100000), 0);
  memory.writeU32(0x100000, 0x12345678);
  assert.equal(memory.readU32(0x100000), 0x12345678);
  assert.equal(memory.readU32(0x200000), 0x600dcafe);
  assert.deepEqual(
    managerInternals(manager).va.entries().map((e) => `${e.range} ${e.kind}`),
    ["0x0-0x100000 private", "0x100000-0x101000 private", "0x101000-0x1000000 private"],
  );
  // The framebuffer still holds what was written through the device mapping.
  using view = HostMapping.shared(framebuffer.fd, 0n, 0x1000n, 1);
  assert.equal(new DataView(view.bytes().buffer).getUint32(0, true), 0xfb000000);
});

Deno.test("16,000 private RAM ranges build in one pass", () => {
  // One-page ranges with one-page gaps: every range is its own private home.
  // Merging a new home used to filter and re-sort all of them (quadratic).
  const count = 16_000;
  const ranges = Array.from({ length: count }, (_, i) => {
    const start = BigInt(i) * 0x2000n;
    return new MemoryRange(start, start + 0x1000n);
  });
  using manager = new GuestMemoryBuilder().privateMemory(true).build(
    MemoryLayout.fromRanges(ranges, []),
  );
  const { va, ramRegions } = managerInternals(manager);
  const entries = va.entries();
  assert.equal(entries.length, count);
  assert.equal(ramRegions.length, count);
  assert.ok(entries.every((e, i) => e.kind === "private" && e.range.equals(ranges[i])));
  const memory = manager.client().guestMemory();
  const last = ranges[count - 1];
  memory.writeU32(last.start, 0x5eed);
  assert.equal(memory.readU32(last.start), 0x5eed);
  assert.equal(memory.isMapped(last.end, 0x1000n), false);
});

Deno.test("private homes merge with the homes they touch, and only those come back", async () => {
  const { OwnedFd } = await import("../ffi/_owned_fd.ts");
  using va = VaMapper.reserve(0x10000n);
  using file = OwnedFd.memfd("over-private", 0);
  file.truncate(0x8000n);
  va.allocPrivate(new MemoryRange(0x0n, 0x1000n));
  va.allocPrivate(new MemoryRange(0x2000n, 0x3000n));
  va.allocPrivate(new MemoryRange(0x5000n, 0x6000n));
  va.allocPrivate(new MemoryRange(0x1000n, 0x2000n)); // touches both of the first two
  const shown = () => va.entries().map((e) => `${e.range} ${e.kind}`);
  va.mapShared(new MemoryRange(0x0n, 0x8000n), file, 0n, true);
  assert.deepEqual(shown(), ["0x0-0x8000 shared"]);
  // Unmapped again: each home comes back as one private range, the rest is
  // inaccessible reservation.
  va.unmap(new MemoryRange(0x0n, 0x8000n));
  assert.deepEqual(shown(), ["0x0-0x3000 private", "0x5000-0x6000 private"]);
  assert.deepEqual(
    vaProtections(va.base, va.size).map((p) => `${new MemoryRange(p.start, p.end)} ${p.perms}`),
    ["0x0-0x3000 rw-p", "0x3000-0x5000 ---p", "0x5000-0x6000 rw-p", "0x6000-0x10000 ---p"],
  );
  // A shared mapping cut in the middle of a home gives back only that part.
  va.mapShared(new MemoryRange(0x1000n, 0x2000n), file, 0n, true);
  va.unmap(new MemoryRange(0x1000n, 0x2000n));
  assert.deepEqual(shown(), [
    "0x0-0x1000 private",
    "0x1000-0x2000 private",
    "0x2000-0x3000 private",
    "0x5000-0x6000 private",
  ]);
});
