import assert from "node:assert/strict";
import { Memfd } from "../ffi/_constants.ts";
import { OwnedFd } from "../ffi/_owned_fd.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { VaMapper } from "../mapping/_va_mapper.ts";
import { GuestMemory } from "../guest_memory/guest_memory.ts";
import { GuestMemoryError, type GuestMemoryErrorKind } from "../guest_memory/guest_memory_error.ts";
import { openFdCount } from "./support/requirements.ts";
import { newGuestMemory } from "../guest_memory/guest_memory.ts";
import { newGuestMemoryClient } from "../guest_memory/guest_memory_client.ts";

const SIZE = 0x20000n;

function range(start: number, end: number): MemoryRange {
  return new MemoryRange(BigInt(start), BigInt(end));
}

/**
 * The test map (reservation 0x0-0x20000, one memfd of the same size, file
 * offset = guest address):
 * - 0x0-0x4000, 0x4000-0x8000, 0x8000-0xa000: shared, writable (three adjacent entries)
 * - 0xa000-0xc000: shared, read-only
 * - 0xc000-0x10000: private
 * - 0x10000-0x1e000: hole
 * - 0x1e000-0x20000: shared, writable, ends at the reservation end
 */
function setup(): { va: VaMapper; fd: OwnedFd; memory: GuestMemory } & Disposable {
  const fd = OwnedFd.memfd("guest-memory-test", Memfd.MFD_CLOEXEC);
  fd.truncate(SIZE);
  const va = VaMapper.reserve(SIZE);
  va.mapShared(range(0x0, 0x4000), fd, 0x0n, true);
  va.mapShared(range(0x4000, 0x8000), fd, 0x4000n, true);
  va.mapShared(range(0x8000, 0xa000), fd, 0x8000n, true);
  va.mapShared(range(0xa000, 0xc000), fd, 0xa000n, false);
  va.allocPrivate(range(0xc000, 0x10000), "guest-memory-test");
  va.mapShared(range(0x1e000, 0x20000), fd, 0x1e000n, true);
  const memory = newGuestMemoryClient(va).guestMemory();
  return {
    va,
    fd,
    memory,
    [Symbol.dispose]() {
      va[Symbol.dispose]();
      fd.close();
    },
  };
}

/** Asserts that `fn` throws a GuestMemoryError of `kind` at `gpa` with exactly `message`. */
function assertGuestError(
  fn: () => unknown,
  kind: GuestMemoryErrorKind,
  gpa: bigint,
  message: string,
): GuestMemoryError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof GuestMemoryError, `expected a GuestMemoryError, got ${caught}`);
  assert.equal(caught.name, "GuestMemoryError");
  assert.equal(caught.kind, kind);
  assert.equal(caught.gpa, gpa);
  assert.equal(caught.message, message);
  return caught;
}

/** A second, independent view of the memfd (its own reservation), for checking bytes. */
function mirror(fd: OwnedFd): { memory: GuestMemory } & Disposable {
  const va = VaMapper.reserve(SIZE);
  va.mapShared(range(0, Number(SIZE)), fd, 0n, true);
  return { memory: newGuestMemory(va), [Symbol.dispose]: () => va[Symbol.dispose]() };
}

Deno.test("GuestMemoryClient", async (t) => {
  await t.step("returns the same GuestMemory on every call", () => {
    using va = VaMapper.reserve(SIZE);
    const client = newGuestMemoryClient(va);
    const memory = client.guestMemory();
    assert.ok(memory instanceof GuestMemory);
    assert.equal(client.guestMemory(), memory);
    assert.equal(memory.size, SIZE);
  });
});

Deno.test("GuestMemory typed accessors", async (t) => {
  using env = setup();
  const { memory } = env;

  await t.step("are little-endian and round-trip", () => {
    memory.writeU64(0x100n, 0x0807060504030201n);
    assert.deepEqual([...memory.readBytes(0x100n, 8)], [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.equal(memory.readU8(0x100), 0x01);
    assert.equal(memory.readU16(0x101n), 0x0302);
    assert.equal(memory.readU32(0x102), 0x06050403);
    assert.equal(memory.readU64(0x100), 0x0807060504030201n);
    memory.writeU8(0x200, 0xff);
    memory.writeU16(0x201n, 0xfeed);
    memory.writeU32(0x203, 0xdeadbeef);
    assert.deepEqual([...memory.readBytes(0x200, 7)], [0xff, 0xed, 0xfe, 0xef, 0xbe, 0xad, 0xde]);
    memory.writeU64(0x300, 0xffff_ffff_ffff_ffffn);
    assert.equal(memory.readU64(0x300n), 0xffff_ffff_ffff_ffffn);
    assert.equal(memory.readU32(0x300n), 0xffff_ffff);
  });

  await t.step("work in private memory", () => {
    memory.writeU32(0xc010, 0x12345678);
    assert.equal(memory.readU32(0xc010n), 0x12345678);
  });

  await t.step("reject values that do not fit", () => {
    assert.throws(() => memory.writeU8(0, 256), {
      name: "RangeError",
      message: "u8 value must be an integer in 0..255, got 256",
    });
    assert.throws(() => memory.writeU16(0, -1), {
      name: "RangeError",
      message: "u16 value must be an integer in 0..65535, got -1",
    });
    assert.throws(() => memory.writeU32(0, 1.5), {
      name: "RangeError",
      message: "u32 value must be an integer in 0..4294967295, got 1.5",
    });
    assert.throws(() => memory.writeU64(0, -1n), {
      name: "RangeError",
      message: "u64 value must be an integer in 0n..18446744073709551615n, got -1n",
    });
    assert.throws(() => memory.writeU64(0, 1n << 64n), { name: "RangeError" });
    assert.throws(() => memory.writeU64(0, 5 as unknown as bigint), { name: "RangeError" });
    assert.throws(() => memory.fill(0, 1, 0x100), { name: "RangeError" });
    assert.equal(memory.readU8(0), 0);
  });
});

Deno.test("GuestMemory address validation", async (t) => {
  using env = setup();
  const { memory } = env;

  await t.step("negative and >= 2^64 addresses are invalid", () => {
    assertGuestError(
      () => memory.readU8(-1n),
      "invalidAddress",
      -1n,
      "guest address -0x1 is not a valid 64-bit address",
    );
    assertGuestError(
      () => memory.readU8(-4096),
      "invalidAddress",
      -4096n,
      "guest address -0x1000 is not a valid 64-bit address",
    );
    assertGuestError(
      () => memory.read(1n << 64n, new Uint8Array(0)),
      "invalidAddress",
      1n << 64n,
      "guest address 0x10000000000000000 is not a valid 64-bit address",
    );
  });

  await t.step("non-integer and unsafe numbers are a TypeError", () => {
    for (const bad of [1.5, NaN, Infinity, 2 ** 53]) {
      assert.throws(() => memory.readU8(bad), {
        name: "TypeError",
        message: `guest address must be a bigint or a safe integer number, got ${bad}`,
      });
    }
    assert.throws(() => memory.readU32("0x10" as unknown as number), {
      name: "TypeError",
      message: 'guest address must be a bigint or a safe integer number, got "0x10"',
    });
    assert.throws(() => memory.readBytes(0, -1), {
      name: "RangeError",
      message: "length must not be negative, got -1",
    });
    assert.throws(() => memory.fill(0, 0.5, 0), {
      name: "TypeError",
      message: "length must be a bigint or a safe integer number, got 0.5",
    });
  });

  await t.step("ranges wrapping past 2^64 overflow", () => {
    const dest = new Uint8Array(32).fill(0xee);
    assertGuestError(
      () => memory.read(0xffff_ffff_ffff_fff0n, dest),
      "overflow",
      0xffff_ffff_ffff_fff0n,
      "guest address range at 0xfffffffffffffff0 of 0x20 bytes wraps past 2^64",
    );
    assert.ok(dest.every((b) => b === 0xee));
    assertGuestError(
      () => memory.readU64(0xffff_ffff_ffff_fffcn),
      "overflow",
      0xffff_ffff_ffff_fffcn,
      "guest address range at 0xfffffffffffffffc of 0x8 bytes wraps past 2^64",
    );
    assertGuestError(
      () => memory.fill(1n, 1n << 64n, 0),
      "overflow",
      1n,
      "guest address range at 0x1 of 0x10000000000000000 bytes wraps past 2^64",
    );
    // Ending exactly at 2^64 does not wrap: it is merely beyond the reservation.
    assertGuestError(
      () => memory.readU64(0xffff_ffff_ffff_fff8n),
      "outOfRange",
      0xffff_ffff_ffff_fff8n,
      "guest address 0xfffffffffffffff8 is outside guest memory 0x0-0x20000",
    );
  });

  await t.step("ranges beyond the reservation are out of range", () => {
    assertGuestError(
      () => memory.readU8(0x20000),
      "outOfRange",
      0x20000n,
      "guest address 0x20000 is outside guest memory 0x0-0x20000",
    );
    assertGuestError(
      () => memory.writeU32(0x123456789n, 0),
      "outOfRange",
      0x123456789n,
      "guest address 0x123456789 is outside guest memory 0x0-0x20000",
    );
    // Starting inside: the first byte past the end is named.
    assertGuestError(
      () => memory.readU64(0x1fff9),
      "outOfRange",
      0x20000n,
      "guest address 0x20000 is outside guest memory 0x0-0x20000",
    );
    assertGuestError(
      () => memory.readBytes(0x1f000, 0x1001),
      "outOfRange",
      0x20000n,
      "guest address 0x20000 is outside guest memory 0x0-0x20000",
    );
  });

  await t.step("ranges ending exactly at the reservation end work", () => {
    memory.writeU64(0x1fff8, 0x1122334455667788n);
    assert.equal(memory.readU64(0x1fff8n), 0x1122334455667788n);
    memory.fill(0x1f000, 0x1000, 0x5a);
    const page = memory.readBytes(0x1f000n, 0x1000n);
    assert.equal(page.length, 0x1000);
    assert.ok(page.every((b) => b === 0x5a));
    assert.equal(memory.readU8(0x1ffff), 0x5a);
    assert.ok(memory.isMapped(0x1e000, 0x2000, true));
  });
});

Deno.test("GuestMemory zero-length accesses", async (t) => {
  using env = setup();
  const { memory } = env;

  await t.step("succeed anywhere up to the reservation end, mapped or not", () => {
    const empty = new Uint8Array(0);
    memory.read(0x10000, empty); // hole
    memory.write(0x10000n, empty);
    memory.write(0xa000, empty); // read-only
    memory.read(0x20000n, empty); // exactly at the end
    memory.write(0x20000, empty);
    memory.fill(0x12000, 0, 0xff);
    assert.deepEqual(memory.readBytes(0x12000, 0), new Uint8Array(0));
    assert.equal(memory.probe(0x20000, 0, true), undefined);
    assert.ok(memory.isMapped(0x10000, 0));
  });

  await t.step("past the reservation end are out of range", () => {
    assertGuestError(
      () => memory.read(0x20001, new Uint8Array(0)),
      "outOfRange",
      0x20001n,
      "guest address 0x20001 is outside guest memory 0x0-0x20000",
    );
    assertGuestError(
      () => memory.fill(0x30000n, 0n, 0),
      "outOfRange",
      0x30000n,
      "guest address 0x30000 is outside guest memory 0x0-0x20000",
    );
  });
});

Deno.test("GuestMemory unmapped and read-only addresses", async (t) => {
  using env = setup();
  const { memory } = env;
  using view = mirror(env.fd);

  await t.step("an access inside a hole is unmapped", () => {
    assertGuestError(
      () => memory.readU8(0x10000),
      "unmapped",
      0x10000n,
      "guest address 0x10000 is not mapped",
    );
    assertGuestError(
      () => memory.writeU64(0x1d008n, 1n),
      "unmapped",
      0x1d008n,
      "guest address 0x1d008 is not mapped",
    );
    assertGuestError(
      () => memory.fill(0x10000, 0x1000, 1),
      "unmapped",
      0x10000n,
      "guest address 0x10000 is not mapped",
    );
  });

  await t.step("a read spanning RAM and a hole fails without copying anything", () => {
    memory.fill(0xf000, 0x1000, 0x77);
    const dest = new Uint8Array(0x20).fill(0xee);
    const err = assertGuestError(
      () => memory.read(0xfff0, dest),
      "unmapped",
      0x10000n,
      "guest address 0x10000 is not mapped",
    );
    assert.deepEqual(err.access, { address: 0xfff0n, length: 0x20n, write: false });
    assert.ok(dest.every((b) => b === 0xee));
    // A large read takes the same path.
    const big = new Uint8Array(0x5000).fill(0xee);
    assertGuestError(
      () => memory.read(0xc000, big),
      "unmapped",
      0x10000n,
      "guest address 0x10000 is not mapped",
    );
    assert.ok(big.every((b) => b === 0xee));
    assertGuestError(
      () => memory.readU64(0xfffc),
      "unmapped",
      0x10000n,
      "guest address 0x10000 is not mapped",
    );
  });

  await t.step("a write spanning RAM and a hole writes nothing", () => {
    memory.fill(0x1e000, 0x10, 0x33);
    assertGuestError(
      () => memory.write(0x1dff8, new Uint8Array(0x10).fill(0x44)),
      "unmapped",
      0x1dff8n,
      "guest address 0x1dff8 is not mapped",
    );
    assertGuestError(
      () => memory.fill(0xfff8, 0x10, 0x44),
      "unmapped",
      0x10000n,
      "guest address 0x10000 is not mapped",
    );
    assertGuestError(
      () => memory.writeU32(0xfffe, 0x44444444),
      "unmapped",
      0x10000n,
      "guest address 0x10000 is not mapped",
    );
    assert.ok(memory.readBytes(0xf000, 0x1000).every((b) => b === 0x77));
    assert.ok(memory.readBytes(0x1e000, 0x10).every((b) => b === 0x33));
  });

  await t.step("read-only memory reads but refuses writes", () => {
    view.memory.fill(0xa000, 0x2000, 0x99);
    assert.equal(memory.readU32(0xa000), 0x99999999);
    assertGuestError(
      () => memory.writeU8(0xa000, 1),
      "readOnly",
      0xa000n,
      "guest address 0xa000 is mapped read-only",
    );
    assertGuestError(
      () => memory.fill(0xb000n, 0x2000n, 1),
      "readOnly",
      0xb000n,
      "guest address 0xb000 is mapped read-only",
    );
    assertGuestError(
      () => memory.compareExchange32(0xa004, 0x99999999, 0),
      "readOnly",
      0xa004n,
      "guest address 0xa004 is mapped read-only",
    );
    assert.equal(memory.probe(0xa000, 4)?.kind, undefined);
    assert.equal(memory.probe(0xa000, 4, true)?.kind, "readOnly");
    assert.ok(!memory.isMapped(0xa000, 4, true));
  });

  await t.step("a write from writable into read-only memory writes nothing", () => {
    memory.fill(0x9ff0, 0x10, 0x11);
    const err = assertGuestError(
      () => memory.write(0x9ff8, new Uint8Array(0x10).fill(0x22)),
      "readOnly",
      0xa000n,
      "guest address 0xa000 is mapped read-only",
    );
    assert.deepEqual(err.access, { address: 0x9ff8n, length: 0x10n, write: true });
    assertGuestError(
      () => memory.writeU64(0x9ffc, 0n),
      "readOnly",
      0xa000n,
      "guest address 0xa000 is mapped read-only",
    );
    assert.ok(memory.readBytes(0x9ff0, 0x10).every((b) => b === 0x11));
    // Reading across the same boundary works.
    assert.equal(memory.readU64(0x9ffc), 0x9999999911111111n);
  });
});

Deno.test("GuestMemory accesses spanning adjacent mappings", async (t) => {
  using env = setup();
  const { memory } = env;
  using view = mirror(env.fd);

  await t.step("reads and writes of byte ranges", () => {
    const src = Uint8Array.from({ length: 0x8010 }, (_, i) => (i * 7 + 3) & 0xff);
    memory.write(0x10, src); // spans 0x0-0x4000, 0x4000-0x8000 and 0x8000-0xa000
    const back = new Uint8Array(src.length);
    memory.read(0x10n, back);
    assert.deepEqual(back, src);
    assert.deepEqual(view.memory.readBytes(0x10, src.length), src);
    const small = new Uint8Array(16);
    memory.read(0x3ff8, small);
    assert.deepEqual(small, src.subarray(0x3fe8, 0x3ff8));
  });

  await t.step("typed values straddling the boundary", () => {
    memory.writeU64(0x3ffc, 0xa1a2a3a4b1b2b3b4n);
    assert.equal(memory.readU64(0x3ffcn), 0xa1a2a3a4b1b2b3b4n);
    assert.equal(view.memory.readU32(0x3ffc), 0xb1b2b3b4);
    assert.equal(view.memory.readU32(0x4000), 0xa1a2a3a4);
    memory.writeU32(0x7ffe, 0xc1c2c3c4);
    assert.equal(memory.readU32(0x7ffe), 0xc1c2c3c4);
    memory.writeU16(0x3fff, 0xd1d2);
    assert.equal(memory.readU16(0x3fff), 0xd1d2);
    assert.equal(view.memory.readU8(0x3fff), 0xd2);
    assert.equal(view.memory.readU8(0x4000), 0xd1);
  });

  await t.step("reads spanning read-only and private memory", () => {
    memory.fill(0xc000, 8, 0x42);
    assert.deepEqual([...memory.readBytes(0xbffc, 8)], [0, 0, 0, 0, 0x42, 0x42, 0x42, 0x42]);
  });

  await t.step("fill across three entries", () => {
    const below = view.memory.readU8(0x2fff);
    const above = view.memory.readU8(0x9000);
    memory.fill(0x3000, 0x6000, 0xab);
    assert.ok(view.memory.readBytes(0x3000, 0x6000).every((b) => b === 0xab));
    assert.equal(view.memory.readU8(0x2fff), below);
    assert.equal(view.memory.readU8(0x9000), above);
    assert.notEqual(below, 0xab);
  });
});

Deno.test("GuestMemory large copies", async (t) => {
  const size = 8n << 20n;
  using fd = OwnedFd.memfd("guest-memory-large", Memfd.MFD_CLOEXEC);
  fd.truncate(size);
  using va = VaMapper.reserve(size);
  va.mapShared(new MemoryRange(0n, 4n << 20n), fd, 0n, true);
  va.mapShared(new MemoryRange(4n << 20n, size), fd, 4n << 20n, true);
  const memory = newGuestMemory(va);

  await t.step("a 1 MiB copy within one mapping", () => {
    const src = Uint8Array.from({ length: 1 << 20 }, (_, i) => (i ^ (i >>> 8)) & 0xff);
    memory.write(0x1000, src);
    const dest = new Uint8Array(1 << 20);
    memory.read(0x1000n, dest);
    assert.deepEqual(dest, src);
  });

  await t.step("a 3 MiB copy across two mappings", () => {
    const src = Uint8Array.from({ length: 3 << 20 }, (_, i) => (i * 13) & 0xff);
    memory.write(3 << 20, src);
    const dest = new Uint8Array(3 << 20);
    memory.read(BigInt(3 << 20), dest);
    assert.deepEqual(dest, src);
  });
});

Deno.test("GuestMemory compare-exchange", async (t) => {
  using env = setup();
  const { memory } = env;

  await t.step("32-bit exchange succeeds only on a match", () => {
    memory.writeU32(0x1000, 0xfffffffe);
    assert.equal(memory.compareExchange32(0x1000n, 1, 2), 0xfffffffe);
    assert.equal(memory.readU32(0x1000), 0xfffffffe);
    assert.equal(memory.compareExchange32(0x1000, 0xfffffffe, 0x80000001), 0xfffffffe);
    assert.equal(memory.readU32(0x1000), 0x80000001);
    assert.deepEqual([...memory.readBytes(0x1000, 4)], [0x01, 0x00, 0x00, 0x80]);
  });

  await t.step("64-bit exchange succeeds only on a match", () => {
    memory.writeU64(0xc008, 0xffff_0000_0000_0001n);
    assert.equal(memory.compareExchange64(0xc008n, 0n, 5n), 0xffff_0000_0000_0001n);
    assert.equal(memory.readU64(0xc008), 0xffff_0000_0000_0001n);
    assert.equal(
      memory.compareExchange64(0xc008, 0xffff_0000_0000_0001n, 0x8000_0000_0000_0000n),
      0xffff_0000_0000_0001n,
    );
    assert.equal(memory.readU64(0xc008), 0x8000_0000_0000_0000n);
  });

  await t.step("misaligned addresses are refused", () => {
    memory.writeU64(0x2000, 0n);
    assertGuestError(
      () => memory.compareExchange32(0x2002, 0, 1),
      "misaligned",
      0x2002n,
      "guest address 0x2002 is not aligned to 4 bytes",
    );
    assertGuestError(
      () => memory.compareExchange64(0x2004n, 0n, 1n),
      "misaligned",
      0x2004n,
      "guest address 0x2004 is not aligned to 8 bytes",
    );
    assertGuestError(
      () => memory.compareExchange64(0xffff_ffff_ffff_fff9n, 0n, 1n),
      "misaligned",
      0xffff_ffff_ffff_fff9n,
      "guest address 0xfffffffffffffff9 is not aligned to 8 bytes",
    );
    assert.equal(memory.readU64(0x2000), 0n);
  });

  await t.step("unmapped and out-of-range addresses are refused", () => {
    assertGuestError(
      () => memory.compareExchange32(0x10000, 0, 1),
      "unmapped",
      0x10000n,
      "guest address 0x10000 is not mapped",
    );
    assertGuestError(
      () => memory.compareExchange64(0x20000n, 0n, 1n),
      "outOfRange",
      0x20000n,
      "guest address 0x20000 is outside guest memory 0x0-0x20000",
    );
    assertGuestError(
      () => memory.compareExchange64(0xffff_ffff_ffff_fff8n, 0n, 1n),
      "outOfRange",
      0xffff_ffff_ffff_fff8n,
      "guest address 0xfffffffffffffff8 is outside guest memory 0x0-0x20000",
    );
  });
});

Deno.test("GuestMemory sees other mappings of the same backing", async (t) => {
  using env = setup();
  using view = mirror(env.fd);

  await t.step("writes through another mapping are visible", () => {
    view.memory.writeU64(0x5000, 0x0123456789abcdefn);
    assert.equal(env.memory.readU64(0x5000), 0x0123456789abcdefn);
  });

  await t.step("writes through GuestMemory are visible elsewhere", () => {
    env.memory.write(0x1e100, new Uint8Array([9, 8, 7]));
    assert.deepEqual([...view.memory.readBytes(0x1e100, 3)], [9, 8, 7]);
  });
});

Deno.test("GuestMemory follows changes to the mapping table", async (t) => {
  using env = setup();
  const { va, fd, memory } = env;

  await t.step("an unmapped range fails even right after a cached hit", () => {
    memory.writeU32(0x4100, 0xcafef00d);
    assert.equal(memory.readU32(0x4100), 0xcafef00d);
    va.unmap(range(0x4000, 0x8000));
    assertGuestError(
      () => memory.readU32(0x4100),
      "unmapped",
      0x4100n,
      "guest address 0x4100 is not mapped",
    );
    assertGuestError(
      () => memory.readBytes(0x3ff0, 0x20),
      "unmapped",
      0x4000n,
      "guest address 0x4000 is not mapped",
    );
  });

  await t.step("mapped read-only: reads work, writes fail", () => {
    va.mapShared(range(0x4000, 0x8000), fd, 0x4000n, false);
    assert.equal(memory.readU32(0x4100), 0xcafef00d);
    assertGuestError(
      () => memory.writeU32(0x4100, 0),
      "readOnly",
      0x4100n,
      "guest address 0x4100 is mapped read-only",
    );
  });

  await t.step("mapped again: the old contents are still there and writable", () => {
    va.mapShared(range(0x4000, 0x8000), fd, 0x4000n, true);
    assert.equal(memory.readU32(0x4100), 0xcafef00d);
    memory.writeU32(0x4100, 1);
    assert.equal(memory.readU32(0x4100), 1);
  });

  await t.step("private memory survives an unmap", () => {
    memory.writeU8(0xc000, 0x5c);
    va.unmap(range(0xc000, 0x10000));
    assert.equal(memory.readU8(0xc000), 0x5c);
  });

  await t.step("after the reservation is released every access fails with disposed", () => {
    assert.equal(memory.readU8(0), memory.readU8(0n));
    va[Symbol.dispose]();
    assertGuestError(
      () => memory.readU8(0),
      "disposed",
      0n,
      "guest address 0x0 is not accessible: the guest memory manager has been disposed",
    );
    assertGuestError(
      () => memory.readU8(0xc000),
      "disposed",
      0xc000n,
      "guest address 0xc000 is not accessible: the guest memory manager has been disposed",
    );
  });
});

Deno.test("GuestMemory leaves no descriptor behind", () => {
  const before = openFdCount();
  {
    using env = setup();
    env.memory.writeU8(0, 1);
    assert.throws(() => env.memory.readU8(0x10000), GuestMemoryError);
  }
  assert.equal(openFdCount(), before);
});
