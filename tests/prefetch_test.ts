import assert from "node:assert/strict";
import { readTextFile } from "../ffi/_proc_files.ts";
import { managerInternals } from "../manager/guest_memory_manager.ts";
import { GuestMemoryBuilder, MemoryLayout, MemoryRange, RamVisibility } from "../mod.ts";

const MiB = 1n << 20n;

/** Resident bytes of the host mappings inside `[base, base + size)`, from /proc/self/smaps. */
function residentBytes(base: bigint, size: bigint): bigint {
  let total = 0n;
  let inside = false;
  for (const line of readTextFile("/proc/self/smaps").split("\n")) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (range !== null) {
      const lo = BigInt(`0x${range[1]}`);
      inside = lo >= base && lo < base + size;
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss !== null && inside) total += BigInt(rss[1]) * 1024n;
  }
  return total;
}

Deno.test("prefetch populates all visible RAM on several threads", async (t) => {
  for (const privateMemory of [false, true]) {
    await t.step(privateMemory ? "private RAM" : "shared RAM", async () => {
      using manager = new GuestMemoryBuilder().privateMemory(privateMemory).build(
        MemoryLayout.fromGaps(64n * MiB, [new MemoryRange(32n * MiB, 48n * MiB)]),
      );
      const { va } = managerInternals(manager);
      assert.ok(residentBytes(va.base, va.size) < 4n * MiB);
      await manager.prefetch({ threads: 2 });
      const resident = residentBytes(va.base, va.size);
      assert.ok(resident >= 64n * MiB, `${resident} bytes resident`);
      assert.ok(resident <= 64n * MiB + 4n * MiB, `${resident} bytes resident`);
    });
  }

  await t.step("RAM hidden meanwhile is skipped, and hidden RAM is not populated", async () => {
    using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
      MemoryLayout.fromGaps(16n * MiB, []),
    );
    const vga = new MemoryRange(0xa0000n, 0xc0000n);
    manager.ramVisibilityControl().setRamVisibility(vga, RamVisibility.Unmapped);
    const running = manager.prefetch();
    manager.ramVisibilityControl().setRamVisibility(
      new MemoryRange(0xc0000n, 0xc4000n),
      RamVisibility.Unmapped,
    );
    await running;
    const { va } = managerInternals(manager);
    assert.equal(residentBytes(va.base + vga.start, vga.len), 0n);
  });

  await t.step("a disposed manager refuses", async () => {
    const manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(MiB, []));
    manager[Symbol.dispose]();
    await assert.rejects(() => manager.prefetch(), {
      name: "DisposedError",
      message: "guest memory manager has been disposed",
    });
  });
});
