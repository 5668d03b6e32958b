/**
 * Random accesses against a model of the mapping table and of memory
 * contents. Each run uses a fresh seed (printed; set MEMBACKING_FUZZ_SEED to
 * replay one) and performs at least 100,000 (address, length, operation)
 * triples, remapping the reservation every round so that cached entries go
 * stale, shared pages alias each other and private RAM comes and goes.
 */
import assert from "node:assert/strict";
import { Memfd } from "../ffi/_constants.ts";
import { OwnedFd } from "../ffi/_owned_fd.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { VaMapper } from "../mapping/_va_mapper.ts";
import { GuestMemoryError, type GuestMemoryErrorKind } from "../guest_memory/guest_memory_error.ts";
import { newGuestMemory } from "../guest_memory/guest_memory.ts";
import { testSeed } from "./support/seeded_random.ts";

const PAGE = 0x1000;
const PAGES = 64;
const SIZE = PAGES * PAGE;
const FILE_PAGES = 32;
const FILE_SIZE = FILE_PAGES * PAGE;
const TWO_POW_64 = 1n << 64n;
const ROUNDS = 125;
const OPS_PER_ROUND = 820; // 102,500 accesses

/** sfc32: a small, fast, seedable PRNG. */
function prng(seed: number): () => number {
  let a = 0x9e3779b9, b = 0x243f6a88, c = 0xb7e15162, d = seed >>> 0;
  const next = () => {
    a >>>= 0, b >>>= 0, c >>>= 0, d >>>= 0;
    const t = (a + b | 0) + d | 0;
    d = d + 1 | 0;
    a = b ^ b >>> 9;
    b = c + (c << 3) | 0;
    c = c << 21 | c >>> 11;
    c = c + t | 0;
    return t >>> 0;
  };
  for (let i = 0; i < 16; i++) next();
  return next;
}

type Page =
  | { kind: "none" }
  | { kind: "private" }
  | { kind: "shared"; filePage: number; writable: boolean };

type Expected =
  | { ok: true }
  | { ok: false; kind: GuestMemoryErrorKind; gpa: bigint };

class Model {
  pages: Page[] = Array.from({ length: PAGES }, () => ({ kind: "none" }));
  file = new Uint8Array(FILE_SIZE);
  private = new Uint8Array(SIZE);
  /** Pages that were ever private RAM: unmapping a shared page there gives private RAM back. */
  home: boolean[] = Array.from({ length: PAGES }, () => false);

  mapShared(page: number, count: number, filePage: number, writable: boolean): void {
    for (let i = 0; i < count; i++) {
      this.pages[page + i] = { kind: "shared", filePage: filePage + i, writable };
    }
  }

  allocPrivate(page: number, count: number): void {
    for (let i = 0; i < count; i++) {
      this.pages[page + i] = { kind: "private" };
      this.home[page + i] = true;
    }
    this.private.fill(0, page * PAGE, (page + count) * PAGE);
  }

  unmap(page: number, count: number): void {
    for (let i = page; i < page + count; i++) {
      if (this.pages[i].kind !== "shared") continue;
      if (this.home[i]) {
        // Private RAM under the shared mapping comes back, zero-filled.
        this.pages[i] = { kind: "private" };
        this.private.fill(0, i * PAGE, (i + 1) * PAGE);
      } else {
        this.pages[i] = { kind: "none" };
      }
    }
  }

  /** The outcome of an access, following GuestMemory's documented check order. */
  check(addr: bigint, length: bigint, write: boolean, align = 1): Expected {
    if (addr < 0n || addr >= TWO_POW_64) return { ok: false, kind: "invalidAddress", gpa: addr };
    if (align > 1 && addr % BigInt(align) !== 0n) {
      return { ok: false, kind: "misaligned", gpa: addr };
    }
    const end = addr + length;
    if (end > TWO_POW_64) return { ok: false, kind: "overflow", gpa: addr };
    const size = BigInt(SIZE);
    if (end > size) return { ok: false, kind: "outOfRange", gpa: addr > size ? addr : size };
    if (length === 0n) return { ok: true };
    const first = Number(addr) / PAGE | 0;
    const last = (Number(end) - 1) / PAGE | 0;
    for (let p = first; p <= last; p++) {
      const page = this.pages[p];
      const at = BigInt(Math.max(Number(addr), p * PAGE));
      if (page.kind === "none") return { ok: false, kind: "unmapped", gpa: at };
      if (write && page.kind === "shared" && !page.writable) {
        return { ok: false, kind: "readOnly", gpa: at };
      }
    }
    return { ok: true };
  }

  #locate(gpa: number): [Uint8Array, number] {
    const page = this.pages[gpa / PAGE | 0];
    if (page.kind === "private") return [this.private, gpa];
    if (page.kind === "shared") return [this.file, page.filePage * PAGE + gpa % PAGE];
    throw new Error(`model: 0x${gpa.toString(16)} is not mapped`);
  }

  read(gpa: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) {
      const [mem, at] = this.#locate(gpa + i);
      out[i] = mem[at];
    }
    return out;
  }

  write(gpa: number, bytes: Uint8Array): void {
    for (let i = 0; i < bytes.length; i++) {
      const [mem, at] = this.#locate(gpa + i);
      mem[at] = bytes[i];
    }
  }
}

function le(bytes: Uint8Array): bigint {
  let value = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]);
  return value;
}

function toLe(value: bigint, size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = Number((value >> BigInt(8 * i)) & 0xffn);
  return out;
}

const OPS = [
  "read",
  "readBytes",
  "write",
  "fill",
  "readU8",
  "readU16",
  "readU32",
  "readU64",
  "writeU8",
  "writeU16",
  "writeU32",
  "writeU64",
  "cas32",
  "cas64",
  "probe",
] as const;
type Op = typeof OPS[number];

const TYPED_SIZE: Partial<Record<Op, number>> = {
  readU8: 1,
  readU16: 2,
  readU32: 4,
  readU64: 8,
  writeU8: 1,
  writeU16: 2,
  writeU32: 4,
  writeU64: 8,
  cas32: 4,
  cas64: 8,
};

function hex(value: bigint): string {
  return value < 0n ? `-0x${(-value).toString(16)}` : `0x${value.toString(16)}`;
}

/** The documented message of a refused access. */
function message(expected: Expected & { ok: false }, length: bigint): string {
  const at = `guest address ${hex(expected.gpa)}`;
  switch (expected.kind) {
    case "invalidAddress":
      return `${at} is not a valid 64-bit address`;
    case "misaligned":
      return `${at} is not aligned to ${length} bytes`;
    case "overflow":
      return `guest address range at ${hex(expected.gpa)} of ${hex(length)} bytes wraps past 2^64`;
    case "outOfRange":
      return `${at} is outside guest memory 0x0-${hex(BigInt(SIZE))}`;
    case "unmapped":
      return `${at} is not mapped`;
    case "readOnly":
      return `${at} is mapped read-only`;
    case "disposed":
      return `${at} is not accessible: the guest memory manager has been disposed`;
  }
}

Deno.test("GuestMemory fuzz against a model of the map", () => {
  const seed = testSeed("MEMBACKING_FUZZ_SEED", "guest memory fuzz");
  const rand = prng(seed);
  const below = (n: number) => rand() % n;
  const chance = (percent: number) => below(100) < percent;

  using fd = OwnedFd.memfd("guest-memory-fuzz", Memfd.MFD_CLOEXEC);
  fd.truncate(BigInt(FILE_SIZE));
  using va = VaMapper.reserve(BigInt(SIZE));
  using mirrorVa = VaMapper.reserve(BigInt(FILE_SIZE));
  mirrorVa.mapShared(new MemoryRange(0n, BigInt(FILE_SIZE)), fd, 0n, false);
  const memory = newGuestMemory(va);
  const mirror = newGuestMemory(mirrorVa);
  const model = new Model();

  const counts: Record<string, number> = {};
  let accesses = 0;
  let failures = 0;
  let crossings = 0;
  const kinds: Record<string, number> = {};

  function remap(): void {
    for (let n = 1 + below(4); n > 0; n--) {
      const page = below(PAGES);
      const choice = below(10);
      if (choice < 5) {
        const count = Math.min(1 + below(16), PAGES - page);
        const filePage = below(FILE_PAGES - count + 1);
        const writable = chance(70);
        va.mapShared(
          MemoryRange.fromLength(BigInt(page * PAGE), BigInt(count * PAGE)),
          fd,
          BigInt(filePage * PAGE),
          writable,
        );
        model.mapShared(page, count, filePage, writable);
      } else if (choice < 7) {
        const count = Math.min(1 + below(8), PAGES - page);
        va.allocPrivate(MemoryRange.fromLength(BigInt(page * PAGE), BigInt(count * PAGE)));
        model.allocPrivate(page, count);
      } else {
        const count = Math.min(1 + below(32), PAGES - page);
        va.unmap(MemoryRange.fromLength(BigInt(page * PAGE), BigInt(count * PAGE)));
        model.unmap(page, count);
      }
    }
  }

  function address(): bigint {
    const choice = below(100);
    if (choice < 50) {
      // Near a page boundary, where entries start and end.
      return BigInt((below(PAGES + 3)) * PAGE) + BigInt(below(33) - 16);
    }
    if (choice < 85) return BigInt(below(SIZE + 2 * PAGE));
    if (choice < 92) return TWO_POW_64 - BigInt(below(64));
    if (choice < 97) return (BigInt(rand()) << 32n) | BigInt(rand());
    return chance(50) ? -BigInt(1 + below(PAGE)) : TWO_POW_64 + BigInt(below(PAGE));
  }

  function length(): number {
    const choice = below(100);
    if (choice < 10) return 0;
    if (choice < 60) return 1 + below(64);
    if (choice < 90) return 65 + below(600);
    return below(3 * PAGE + 100);
  }

  /** Passes safe addresses as numbers half of the time. */
  function asArg(addr: bigint): bigint | number {
    return addr <= BigInt(Number.MAX_SAFE_INTEGER) && addr >= -BigInt(Number.MAX_SAFE_INTEGER) &&
        chance(50)
      ? Number(addr)
      : addr;
  }

  function randomBytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = rand() & 0xff;
    return out;
  }

  function expectError(
    context: string,
    expected: Expected,
    fn: () => unknown,
  ): boolean {
    if (expected.ok) return false;
    let caught: unknown;
    try {
      fn();
    } catch (err) {
      caught = err;
    }
    assert.ok(
      caught instanceof GuestMemoryError,
      `${context}: expected ${expected.kind}, got ${caught}`,
    );
    assert.equal(caught.kind, expected.kind, `${context}: ${caught.message}`);
    assert.equal(caught.gpa, expected.gpa, `${context}: ${caught.message}`);
    assert.equal(caught.message, message(expected, caught.access.length), context);
    failures++;
    kinds[expected.kind] = (kinds[expected.kind] ?? 0) + 1;
    return true;
  }

  /** Counts successful accesses that cross a page boundary (and so may span entries). */
  function crossing(addr: bigint, len: number): void {
    if (
      len > 0 && Math.floor(Number(addr) / PAGE) !== Math.floor((Number(addr) + len - 1) / PAGE)
    ) {
      crossings++;
    }
  }

  function access(): void {
    const op = OPS[below(OPS.length)];
    counts[op] = (counts[op] ?? 0) + 1;
    accesses++;
    const addr = address();
    const arg = asArg(addr);
    const context = `seed ${seed}, access ${accesses}: ${op} at ${hex(addr)}`;
    const size = TYPED_SIZE[op];
    if (size !== undefined) {
      const write = op.startsWith("write") || op.startsWith("cas");
      const align = op.startsWith("cas") ? size : 1;
      const expected = model.check(addr, BigInt(size), write, align);
      if (op.startsWith("read")) {
        const read = () => {
          switch (op) {
            case "readU8":
              return BigInt(memory.readU8(arg));
            case "readU16":
              return BigInt(memory.readU16(arg));
            case "readU32":
              return BigInt(memory.readU32(arg));
            default:
              return memory.readU64(arg);
          }
        };
        if (expectError(context, expected, read)) return;
        assert.equal(read(), le(model.read(Number(addr), size)), context);
        crossing(addr, size);
        return;
      }
      const value = le(randomBytes(size));
      if (op.startsWith("write")) {
        const write = () => {
          switch (op) {
            case "writeU8":
              return memory.writeU8(arg, Number(value));
            case "writeU16":
              return memory.writeU16(arg, Number(value));
            case "writeU32":
              return memory.writeU32(arg, Number(value));
            default:
              return memory.writeU64(arg, value);
          }
        };
        if (expectError(context, expected, write)) return;
        write();
        crossing(addr, size);
        model.write(Number(addr), toLe(value, size));
        return;
      }
      // Compare-exchange: expect the current value half of the time.
      const current = expected.ok ? le(model.read(Number(addr), size)) : 0n;
      const compare = chance(50) ? current : le(randomBytes(size));
      const cas = () =>
        size === 4
          ? BigInt(memory.compareExchange32(arg, Number(compare), Number(value)))
          : memory.compareExchange64(arg, compare, value);
      if (expectError(context, expected, cas)) return;
      assert.equal(cas(), current, context);
      if (current === compare) model.write(Number(addr), toLe(value, size));
      return;
    }

    const len = length();
    switch (op) {
      case "read": {
        const expected = model.check(addr, BigInt(len), false);
        const dest = new Uint8Array(len).fill(0xa5);
        if (expectError(context, expected, () => memory.read(arg, dest))) {
          assert.ok(dest.every((b) => b === 0xa5), `${context}: failed read copied bytes`);
          return;
        }
        memory.read(arg, dest);
        crossing(addr, len);
        assert.deepEqual(dest, model.read(Number(addr), len), context);
        return;
      }
      case "readBytes": {
        const expected = model.check(addr, BigInt(len), false);
        if (expectError(context, expected, () => memory.readBytes(arg, len))) return;
        assert.deepEqual(
          memory.readBytes(arg, BigInt(len)),
          model.read(Number(addr), len),
          context,
        );
        return;
      }
      case "write": {
        const expected = model.check(addr, BigInt(len), true);
        const src = randomBytes(len);
        if (expectError(context, expected, () => memory.write(arg, src))) return;
        memory.write(arg, src);
        crossing(addr, len);
        model.write(Number(addr), src);
        return;
      }
      case "fill": {
        const fillLength = chance(2) ? TWO_POW_64 - BigInt(below(PAGE)) : BigInt(len);
        const expected = model.check(addr, fillLength, true);
        const value = rand() & 0xff;
        if (expectError(context, expected, () => memory.fill(arg, fillLength, value))) return;
        memory.fill(arg, chance(50) ? Number(fillLength) : fillLength, value);
        model.write(Number(addr), new Uint8Array(Number(fillLength)).fill(value));
        crossing(addr, Number(fillLength));
        return;
      }
      case "probe": {
        const write = chance(50);
        const expected = model.check(addr, BigInt(len), write);
        const result = memory.probe(arg, len, write);
        if (expected.ok) {
          assert.equal(result, undefined, context);
        } else {
          assert.equal(result?.kind, expected.kind, context);
          assert.equal(result?.gpa, expected.gpa, context);
        }
        assert.equal(memory.isMapped(arg, len, write), expected.ok, context);
        return;
      }
    }
  }

  /** Compares every accessible byte (and the backing file) with the model. */
  function verifyAll(): void {
    assert.deepEqual(mirror.readBytes(0, FILE_SIZE), model.file, `seed ${seed}: backing file`);
    for (let p = 0; p < PAGES; p++) {
      const mapped = model.pages[p].kind !== "none";
      assert.equal(memory.isMapped(p * PAGE, PAGE), mapped, `seed ${seed}: page ${p}`);
      if (mapped) {
        assert.deepEqual(memory.readBytes(p * PAGE, PAGE), model.read(p * PAGE, PAGE));
      }
    }
  }

  for (let round = 0; round < ROUNDS; round++) {
    remap();
    for (let i = 0; i < OPS_PER_ROUND; i++) access();
    verifyAll();
  }

  assert.ok(accesses >= 100_000);
  for (
    const kind of [
      "invalidAddress",
      "misaligned",
      "overflow",
      "outOfRange",
      "unmapped",
      "readOnly",
    ]
  ) {
    assert.ok((kinds[kind] ?? 0) > 100, `only ${kinds[kind] ?? 0} ${kind} errors`);
  }
  assert.ok(crossings > 1_000, `only ${crossings} successful accesses crossed a page boundary`);
  // Both outcomes must be well represented for the run to mean anything.
  assert.ok(failures > accesses / 10, `only ${failures} of ${accesses} accesses failed`);
  assert.ok(failures < accesses * 9 / 10, `${failures} of ${accesses} accesses failed`);
  console.log(`${accesses} accesses, ${failures} refused, ${crossings} page crossings`);
  console.log("operations:", counts, "errors:", kinds);
});
