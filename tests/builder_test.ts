import assert from "node:assert/strict";
import { GuestMemoryBuilder, PRIVATE_RAM_NAME, RAM_PRIORITY, VA_ALIGNMENT } from "../builder.ts";
import { Fcntl, Memfd } from "../ffi/_constants.ts";
import { OwnedFd } from "../ffi/_owned_fd.ts";
import { readTextFile } from "../ffi/_proc_files.ts";
import { SyscallError } from "../ffi/syscall_error.ts";
import { hostPageSize } from "../ffi/_system.ts";
import { MemoryLayout } from "../layout/memory_layout.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import { MemorySize } from "../layout/memory_size.ts";
import { VaMapper } from "../mapping/_va_mapper.ts";
import {
  DEFAULT_HUGEPAGE_SIZE,
  MAX_HOST_SIZE,
  MAX_POINTER_SIZE,
  validateHugepageRamAlignment,
  validateHugepageSize,
} from "../manager/_hugepage_validation.ts";
import { MemoryBuildError, type MemoryBuildErrorKind } from "../manager/memory_build_error.ts";
import { GUEST_RAM_SEALS } from "../manager/_ram_backing.ts";
import { SharedMemoryBacking } from "../manager/shared_memory_backing.ts";
import { openFdCount } from "./support/requirements.ts";
import { managerInternals } from "../manager/guest_memory_manager.ts";
import { duplicateBacking } from "../manager/shared_memory_backing.ts";

const MiB = 1n << 20n;
const GiB = 1n << 30n;

/** 4 MiB of RAM from 0, nothing else. */
const SMALL = MemoryLayout.fromGaps(4n * MiB, []);

/** Asserts `fn` throws a MemoryBuildError of `kind` with exactly `message`; returns it. */
function expectBuildError(
  fn: () => unknown,
  kind: MemoryBuildErrorKind,
  message: string,
): MemoryBuildError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof MemoryBuildError, `expected MemoryBuildError, got ${caught}`);
  assert.equal(caught.message, message);
  assert.equal(caught.kind, kind);
  assert.equal(caught.detail.kind, kind);
  assert.equal(caught.name, "MemoryBuildError");
  return caught;
}

/** A small stand-alone backing (a sealed-size memfd of `size` bytes). */
function scratchBacking(size = 4n * MiB): SharedMemoryBacking {
  using fd = OwnedFd.memfd("scratch-ram", Memfd.MFD_CLOEXEC);
  fd.truncate(size);
  return SharedMemoryBacking.fromMappable(fd);
}

/** Runs `fn` with `Deno.build.os` reporting `os` (restored after). */
function onOs<T>(os: string, fn: () => T): T {
  const real = Deno.build;
  (Deno as { build: typeof Deno.build }).build = { ...real, os } as typeof Deno.build;
  try {
    return fn();
  } finally {
    (Deno as { build: typeof Deno.build }).build = real;
  }
}

const PRIVATE_WITH_LEGACY = "private memory is incompatible with x86 legacy support";
const PRIVATE_WITH_EXISTING = "private memory is incompatible with existing memory backing";
const THP_WITHOUT_PRIVATE = "transparent huge pages requires private memory mode";
const THP_NOT_LINUX = "transparent huge pages is only supported on Linux";
const HUGEPAGES_NOT_LINUX = "hugepages are only supported on Linux";
const HUGEPAGES_WITH_PRIVATE = "hugepages require shared memory mode";
const HUGEPAGES_WITH_EXISTING = "hugepages are incompatible with existing memory backing";
const HUGEPAGES_WITH_LEGACY = "hugepages are incompatible with x86 legacy RAM splitting";
const ALIAS_WONT_FIT = "not enough guest address space available for the vtl0 alias map";
const BAD_X86_RAM = "x86 support requires RAM to start at 0 and contain at least 1MB";

Deno.test("reference test cases", async (t) => {
  await t.step("validate_hugepage_size: page size ok, half a page and 3 MiB invalid", () => {
    const page = hostPageSize();
    assert.equal(validateHugepageSize(page, page), page);
    expectBuildError(
      () => validateHugepageSize(page / 2n, page),
      "invalidHugepageSize",
      `hugepage size ${new MemorySize(
        page / 2n,
      )} must be a power of two and at least the host page size`,
    );
    expectBuildError(
      () => validateHugepageSize(3n * MiB, page),
      "invalidHugepageSize",
      "hugepage size 3 MB must be a power of two and at least the host page size",
    );
  });

  await t.step("validate_hugepage_ram_alignment", () => {
    const hp = 2n * MiB;
    validateHugepageRamAlignment(
      4n * MiB,
      [new MemoryRange(0n, hp), new MemoryRange(2n * hp, 3n * hp)],
      hp,
    );
    const size = expectBuildError(
      () => validateHugepageRamAlignment(3n * MiB, [], hp),
      "hugepageRamSizeUnaligned",
      "RAM size 3 MB is not aligned to 2 MB hugepages; choose a memory size that is a multiple of the hugepage size",
    );
    assert.equal(
      size.detail.kind === "hugepageRamSizeUnaligned" && size.detail.ramSize.bytes,
      3n * MiB,
    );
    expectBuildError(
      () => validateHugepageRamAlignment(hp, [new MemoryRange(0n, MiB)], hp),
      "hugepageRamRangeUnaligned",
      "RAM range 0x0-0x100000 (1 MB) is not aligned to 2 MB hugepages; range start and size must both be multiples of the hugepage size",
    );
  });

  await t.step("hugepage_ram_size_alignment_error_message", () => {
    expectBuildError(
      () => validateHugepageRamAlignment(257n * MiB, [], 2n * MiB),
      "hugepageRamSizeUnaligned",
      "RAM size 257 MB is not aligned to 2 MB hugepages; choose a memory size that is a multiple of the hugepage size",
    );
  });

  await t.step("hugepage_ram_range_alignment_error_message", () => {
    expectBuildError(
      () => validateHugepageRamAlignment(2n * MiB, [new MemoryRange(0n, MiB)], 2n * MiB),
      "hugepageRamRangeUnaligned",
      "RAM range 0x0-0x100000 (1 MB) is not aligned to 2 MB hugepages; range start and size must both be multiples of the hugepage size",
    );
  });

  await t.step("hugepage_allocation_error_message", () => {
    const error = new MemoryBuildError({
      kind: "hugepageAllocationFailed",
      size: new MemorySize(GiB),
      hugepageSize: new MemorySize(2n * MiB),
      pageCount: 512n,
    }, { cause: new SyscallError("fallocate", 12) });
    assert.equal(
      error.message,
      "failed to reserve 512 hugetlb pages of 2 MB each (1 GB total); increase the hugetlb pool or reduce guest memory size",
    );
    assert.ok(error.cause instanceof SyscallError);
    assert.equal(error.cause.message, "Cannot allocate memory");
  });
});

Deno.test("every build error text", async (t) => {
  await t.step("private memory with x86 legacy support", () => {
    expectBuildError(
      () => new GuestMemoryBuilder().privateMemory(true).x86LegacySupport(true).build(SMALL),
      "privateMemoryWithLegacy",
      PRIVATE_WITH_LEGACY,
    );
  });

  await t.step("private memory with an existing backing", () => {
    using backing = scratchBacking();
    expectBuildError(
      () => new GuestMemoryBuilder().privateMemory(true).existingBacking(backing).build(SMALL),
      "privateMemoryWithExistingBacking",
      PRIVATE_WITH_EXISTING,
    );
  });

  await t.step("transparent hugepages without private memory", () => {
    expectBuildError(
      () => new GuestMemoryBuilder().transparentHugepages(true).build(SMALL),
      "thpWithoutPrivateMemory",
      THP_WITHOUT_PRIVATE,
    );
  });

  await t.step("transparent hugepages off Linux", () => {
    const builder = new GuestMemoryBuilder().privateMemory(true).transparentHugepages(true);
    onOs(
      "darwin",
      () => expectBuildError(() => builder.build(SMALL), "thpUnsupportedPlatform", THP_NOT_LINUX),
    );
  });

  await t.step("hugepages off Linux", () => {
    onOs("windows", () =>
      expectBuildError(
        () => new GuestMemoryBuilder().hugepages().build(SMALL),
        "hugepagesUnsupportedPlatform",
        HUGEPAGES_NOT_LINUX,
      ));
  });

  await t.step("hugepages with private memory", () => {
    expectBuildError(
      () => new GuestMemoryBuilder().hugepages().privateMemory(true).build(SMALL),
      "hugepagesWithPrivateMemory",
      HUGEPAGES_WITH_PRIVATE,
    );
  });

  await t.step("hugepages with an existing backing", () => {
    using backing = scratchBacking();
    expectBuildError(
      () => new GuestMemoryBuilder().hugepages().existingBacking(backing).build(SMALL),
      "hugepagesWithExistingBacking",
      HUGEPAGES_WITH_EXISTING,
    );
  });

  await t.step("hugepages with x86 legacy support", () => {
    expectBuildError(
      () => new GuestMemoryBuilder().hugepages().x86LegacySupport(true).build(SMALL),
      "hugepagesWithLegacy",
      HUGEPAGES_WITH_LEGACY,
    );
  });

  await t.step("hugepage size not a power of two or below the page size", () => {
    const cases: Array<[bigint, string]> = [
      [3n * MiB, "3 MB"],
      [hostPageSize() / 2n, `${new MemorySize(hostPageSize() / 2n)}`],
      [0n, "0 bytes"],
      [-2n * MiB, "-2 MB"],
      [6000n, "6000 bytes"],
    ];
    for (const [size, shown] of cases) {
      const error = expectBuildError(
        () => new GuestMemoryBuilder().hugepages(size).build(SMALL),
        "invalidHugepageSize",
        `hugepage size ${shown} must be a power of two and at least the host page size`,
      );
      assert.deepEqual(error.detail, { kind: "invalidHugepageSize", size: new MemorySize(size) });
    }
  });

  await t.step("hugepage size too large for the host (above 2^64 - 1)", () => {
    assert.equal(MAX_POINTER_SIZE, 0xffff_ffff_ffff_ffffn);
    expectBuildError(
      () => new GuestMemoryBuilder().hugepages(1n << 64n).build(SMALL),
      "hugepageSizeTooLarge",
      "hugepage size 16777216 TB is too large",
    );
    expectBuildError(
      () => new GuestMemoryBuilder().hugepages(1n << 70n).build(SMALL),
      "hugepageSizeTooLarge",
      "hugepage size 1073741824 TB is too large",
    );
    // 2^63 fits a 64-bit pointer size, as in the reference: alignment fails.
    const error = expectBuildError(
      () => new GuestMemoryBuilder().hugepages(2n ** 63n).build(SMALL),
      "hugepageRamSizeUnaligned",
      "RAM size 4 MB is not aligned to 8388608 TB hugepages; choose a memory size that is a multiple of the hugepage size",
    );
    assert.deepEqual(error.detail, {
      kind: "hugepageRamSizeUnaligned",
      ramSize: new MemorySize(4n * MiB),
      hugepageSize: new MemorySize(2n ** 63n),
    });
    // 2^62 is a valid size; the layout is not aligned to it.
    expectBuildError(
      () => new GuestMemoryBuilder().hugepages(1n << 62n).build(SMALL),
      "hugepageRamSizeUnaligned",
      "RAM size 4 MB is not aligned to 4194304 TB hugepages; choose a memory size that is a multiple of the hugepage size",
    );
  });

  await t.step("RAM size not aligned to the hugepage size (default 2 MiB)", () => {
    assert.equal(DEFAULT_HUGEPAGE_SIZE, 2n * MiB);
    expectBuildError(
      () => new GuestMemoryBuilder().hugepages().build(MemoryLayout.fromGaps(257n * MiB, [])),
      "hugepageRamSizeUnaligned",
      "RAM size 257 MB is not aligned to 2 MB hugepages; choose a memory size that is a multiple of the hugepage size",
    );
    expectBuildError(
      () => new GuestMemoryBuilder().hugepages(undefined).build(MemoryLayout.fromGaps(MiB, [])),
      "hugepageRamSizeUnaligned",
      "RAM size 1 MB is not aligned to 2 MB hugepages; choose a memory size that is a multiple of the hugepage size",
    );
  });

  await t.step("RAM size counts the VTL2 range", () => {
    const layout = MemoryLayout.fromGaps(2n * MiB, [], {
      vtl2Range: new MemoryRange(4n * MiB, 5n * MiB),
    });
    expectBuildError(
      () => new GuestMemoryBuilder().hugepages().build(layout),
      "hugepageRamSizeUnaligned",
      "RAM size 3 MB is not aligned to 2 MB hugepages; choose a memory size that is a multiple of the hugepage size",
    );
  });

  await t.step("RAM range not aligned to the hugepage size", () => {
    const layout = MemoryLayout.fromRanges(
      [new MemoryRange(0n, MiB), new MemoryRange(2n * MiB, 3n * MiB)],
      [],
    );
    expectBuildError(
      () => new GuestMemoryBuilder().hugepages().build(layout),
      "hugepageRamRangeUnaligned",
      "RAM range 0x0-0x100000 (1 MB) is not aligned to 2 MB hugepages; range start and size must both be multiples of the hugepage size",
    );
    // The VTL2 range is checked like RAM: here its start is off.
    const vtl2 = MemoryLayout.fromGaps(2n * MiB, [], {
      vtl2Range: new MemoryRange(3n * MiB, 5n * MiB),
    });
    expectBuildError(
      () => new GuestMemoryBuilder().hugepages().build(vtl2),
      "hugepageRamRangeUnaligned",
      "RAM range 0x300000-0x500000 (2 MB) is not aligned to 2 MB hugepages; range start and size must both be multiples of the hugepage size",
    );
  });

  await t.step("ram size too large for the host (above 2^63 - 1)", () => {
    assert.equal(MAX_HOST_SIZE, 0x7fff_ffff_ffff_ffffn);
    const huge = MemoryLayout.fromRanges([new MemoryRange(0n, (1n << 63n) + 0x1000n)], []);
    expectBuildError(
      () => new GuestMemoryBuilder().build(huge),
      "ramTooLarge",
      "ram size 9007199254740996 KB is too large",
    );
  });

  await t.step("failed to allocate memory (the OS error as cause)", () => {
    // A memfd of any size up to 2^63 - 1 can be sized on Linux, so make
    // ftruncate fail the way a full kernel would.
    const real = OwnedFd.prototype.truncate;
    OwnedFd.prototype.truncate = () => {
      throw new SyscallError("ftruncate", 27);
    };
    const fds = openFdCount();
    let error: MemoryBuildError;
    try {
      error = expectBuildError(
        () => new GuestMemoryBuilder().build(SMALL),
        "allocationFailed",
        "failed to allocate memory",
      );
    } finally {
      OwnedFd.prototype.truncate = real;
    }
    assert.ok(error.cause instanceof SyscallError);
    assert.equal(error.cause.code, "EFBIG");
    assert.equal(error.cause.message, "File too large");
    assert.equal(openFdCount(), fds, "the memfd is closed");
  });

  await t.step("failed to reserve hugetlb pages (unsupported page size: no pool needed)", () => {
    // 4 KiB passes validation (power of two, at least the page size) but no
    // hugetlb pool has that size: memfd_create refuses.
    const error = expectBuildError(
      () => new GuestMemoryBuilder().hugepages(4096n).build(MemoryLayout.fromGaps(2n * MiB, [])),
      "hugepageAllocationFailed",
      "failed to reserve 512 hugetlb pages of 4 KB each (2 MB total); increase the hugetlb pool or reduce guest memory size",
    );
    assert.ok(error.cause instanceof SyscallError);
    assert.equal(error.cause.syscall, "memfd_create");
    assert.deepEqual(error.detail, {
      kind: "hugepageAllocationFailed",
      size: new MemorySize(2n * MiB),
      hugepageSize: new MemorySize(4096n),
      pageCount: 512n,
    });
  });

  await t.step("hugepages of 4 GiB and more: the OS error as cause, never a TypeError", () => {
    // log2 = 32 and up: the size field of the memfd flags no longer fits a
    // signed 32-bit shift. The kernel has no pool of these sizes (ENODEV).
    const cases: [bigint, string][] = [
      [4n * GiB, "1 hugetlb pages of 4 GB each (4 GB total)"],
      [8n * GiB, "1 hugetlb pages of 8 GB each (8 GB total)"],
    ];
    for (const [hp, shown] of cases) {
      const fds = openFdCount();
      const error = expectBuildError(
        () => new GuestMemoryBuilder().hugepages(hp).build(MemoryLayout.fromGaps(hp, [])),
        "hugepageAllocationFailed",
        `failed to reserve ${shown}; increase the hugetlb pool or reduce guest memory size`,
      );
      assert.ok(error.cause instanceof SyscallError, `cause is ${error.cause}`);
      assert.equal(error.cause.syscall, "memfd_create");
      assert.equal(error.cause.code, "ENODEV");
      assert.equal(error.cause.message, "No such device");
      assert.deepEqual(error.detail, {
        kind: "hugepageAllocationFailed",
        size: new MemorySize(hp),
        hugepageSize: new MemorySize(hp),
        pageCount: 1n,
      });
      assert.equal(openFdCount(), fds);
    }
  });

  await t.step("alias map does not fit above the layout", () => {
    expectBuildError(
      () => new GuestMemoryBuilder().vtl0AliasMap(2n * MiB).build(SMALL),
      "aliasMapWontFit",
      ALIAS_WONT_FIT,
    );
    // The VTL2 range counts too.
    const vtl2 = MemoryLayout.fromGaps(4n * MiB, [], {
      vtl2Range: new MemoryRange(8n * MiB, 10n * MiB),
    });
    expectBuildError(
      () => new GuestMemoryBuilder().vtl0AliasMap(9n * MiB).build(vtl2),
      "aliasMapWontFit",
      ALIAS_WONT_FIT,
    );
    // So do MMIO gaps above RAM.
    const gap = MemoryLayout.fromGaps(4n * MiB, [new MemoryRange(16n * MiB, 32n * MiB)]);
    expectBuildError(
      () => new GuestMemoryBuilder().vtl0AliasMap(16n * MiB).build(gap),
      "aliasMapWontFit",
      ALIAS_WONT_FIT,
    );
  });

  await t.step("alias map exactly at the end of the layout fits", () => {
    using manager = new GuestMemoryBuilder().vtl0AliasMap(10n * MiB).build(
      MemoryLayout.fromGaps(4n * MiB, [], { vtl2Range: new MemoryRange(8n * MiB, 10n * MiB) }),
    );
    assert.equal(managerInternals(manager).va.size, 10n * MiB);
    assert.equal(manager.inspect().vtl0_alias_map_offset, "0xa00000");
  });

  await t.step("failed to create VA mapper (address space far beyond the host's)", () => {
    const far = MemoryLayout.fromGaps(4n * MiB, [
      new MemoryRange(1n << 62n, (1n << 62n) + 0x1000n),
    ]);
    const error = expectBuildError(
      () => new GuestMemoryBuilder().build(far),
      "vaMapper",
      "failed to create VA mapper",
    );
    assert.ok(error.cause instanceof SyscallError);
    assert.equal(error.cause.code, "ENOMEM");
    assert.equal(error.cause.message, "Cannot allocate memory");
  });

  await t.step("x86 legacy support needs RAM from 0 to at least 1 MiB", () => {
    expectBuildError(
      () =>
        new GuestMemoryBuilder().x86LegacySupport(true).build(
          MemoryLayout.fromRanges([new MemoryRange(MiB, 4n * MiB)], []),
        ),
      "invalidRamForX86",
      BAD_X86_RAM,
    );
    expectBuildError(
      () =>
        new GuestMemoryBuilder().x86LegacySupport(true).build(MemoryLayout.fromGaps(0x80000n, [])),
      "invalidRamForX86",
      BAD_X86_RAM,
    );
    expectBuildError(
      () =>
        new GuestMemoryBuilder().x86LegacySupport(true).build(
          MemoryLayout.fromGaps(4n * MiB, [new MemoryRange(0n, 0x1000n)]),
        ),
      "invalidRamForX86",
      BAD_X86_RAM,
    );
  });

  await t.step("failed to allocate private RAM range (the OS error as cause)", () => {
    // MAP_FIXED anonymous memory inside our own reservation does not fail on
    // demand: refuse the second range the way a kernel out of VMAs would.
    const real = VaMapper.prototype.allocPrivate;
    const reserved: VaMapper[] = [];
    VaMapper.prototype.allocPrivate = function (range, name) {
      reserved.push(this);
      if (range.start !== 0n) throw new SyscallError("mmap", 12);
      return real.call(this, range, name);
    };
    const layout = MemoryLayout.fromGaps(4n * MiB, [new MemoryRange(MiB, 2n * MiB)]);
    let error: MemoryBuildError;
    try {
      error = expectBuildError(
        () => new GuestMemoryBuilder().privateMemory(true).build(layout),
        "privateRamAlloc",
        "failed to allocate private RAM range 0x200000-0x500000",
      );
    } finally {
      VaMapper.prototype.allocPrivate = real;
    }
    assert.deepEqual(error.detail, {
      kind: "privateRamAlloc",
      range: new MemoryRange(2n * MiB, 5n * MiB),
    });
    assert.equal((error.cause as SyscallError).message, "Cannot allocate memory");
    assert.equal(reserved.length, 2);
    assert.equal(reserved[0].isReserved, false, "the reservation and first range are released");
  });

  await t.step("existing backing smaller than guest RAM (beyond the reference)", () => {
    using backing = scratchBacking(2n * MiB);
    expectBuildError(
      () => new GuestMemoryBuilder().existingBacking(backing).build(SMALL),
      "existingBackingTooSmall",
      "existing memory backing holds 2 MB, less than the 4 MB of guest RAM",
    );
  });
});

Deno.test("order of checks: the first broken rule wins", async (t) => {
  using backing = scratchBacking();
  const b = () => new GuestMemoryBuilder();
  const high = MemoryLayout.fromGaps(4n * MiB, [new MemoryRange(1n << 62n, (1n << 62n) + 0x1000n)]);
  const cases: Array<[string, () => unknown, MemoryBuildErrorKind]> = [
    [
      "legacy before existing backing (step 1)",
      () => b().privateMemory(true).x86LegacySupport(true).existingBacking(backing).build(SMALL),
      "privateMemoryWithLegacy",
    ],
    [
      "private+existing before hugepages (step 1 before 4)",
      () => b().privateMemory(true).existingBacking(backing).hugepages().build(SMALL),
      "privateMemoryWithExistingBacking",
    ],
    [
      "private+legacy before THP (step 1 before 2)",
      () => b().transparentHugepages(true).privateMemory(true).x86LegacySupport(true).build(SMALL),
      "privateMemoryWithLegacy",
    ],
    [
      "THP without private before hugepages with legacy (step 2 before 4)",
      () => b().transparentHugepages(true).hugepages().x86LegacySupport(true).build(SMALL),
      "thpWithoutPrivateMemory",
    ],
    [
      "THP off Linux before hugepages with private memory",
      () =>
        onOs(
          "darwin",
          () => b().privateMemory(true).transparentHugepages(true).hugepages().build(SMALL),
        ),
      "thpUnsupportedPlatform",
    ],
    [
      "hugepages off Linux before hugepages with private memory",
      () => onOs("darwin", () => b().privateMemory(true).hugepages().build(SMALL)),
      "hugepagesUnsupportedPlatform",
    ],
    [
      "hugepages with private memory before the size check",
      () => b().privateMemory(true).transparentHugepages(true).hugepages(3n).build(SMALL),
      "hugepagesWithPrivateMemory",
    ],
    [
      "hugepages with existing backing before legacy",
      () => b().hugepages().existingBacking(backing).x86LegacySupport(true).build(SMALL),
      "hugepagesWithExistingBacking",
    ],
    [
      "hugepages with legacy before the size check",
      () => b().hugepages(3n * MiB).x86LegacySupport(true).build(SMALL),
      "hugepagesWithLegacy",
    ],
    [
      "size before alignment",
      () => b().hugepages(3n * MiB).build(MemoryLayout.fromGaps(257n * MiB, [])),
      "invalidHugepageSize",
    ],
    [
      "too large before alignment",
      () => b().hugepages(1n << 64n).build(MemoryLayout.fromGaps(257n * MiB, [])),
      "hugepageSizeTooLarge",
    ],
    [
      "total size before each range",
      () =>
        b().hugepages().build(
          MemoryLayout.fromRanges(
            [new MemoryRange(0n, MiB), new MemoryRange(2n * MiB, 4n * MiB)],
            [],
          ),
        ),
      "hugepageRamSizeUnaligned",
    ],
    [
      "hugepage alignment before the alias map (step 4 before 6)",
      () => b().hugepages().vtl0AliasMap(0n).build(MemoryLayout.fromGaps(MiB, [])),
      "hugepageRamSizeUnaligned",
    ],
    [
      "ram too large before the alias map (step 5 before 6)",
      () =>
        b().vtl0AliasMap(0n).build(
          MemoryLayout.fromRanges([new MemoryRange(0n, (1n << 63n) + 0x1000n)], []),
        ),
      "ramTooLarge",
    ],
    [
      "hugetlb allocation before the alias map (step 5 before 6)",
      () => b().hugepages(4096n).vtl0AliasMap(0n).build(SMALL),
      "hugepageAllocationFailed",
    ],
    [
      "existing backing size before the alias map",
      () => {
        using tiny = scratchBacking(MiB);
        return b().existingBacking(tiny).vtl0AliasMap(0n).build(SMALL);
      },
      "existingBackingTooSmall",
    ],
    [
      "alias map before the VA reservation (step 6 before 7)",
      () => b().vtl0AliasMap(1n << 40n).build(high),
      "aliasMapWontFit",
    ],
    [
      "alias map before x86 RAM (step 6 before 8)",
      () =>
        b().x86LegacySupport(true).vtl0AliasMap(MiB).build(
          MemoryLayout.fromRanges([new MemoryRange(MiB, 4n * MiB)], []),
        ),
      "aliasMapWontFit",
    ],
    [
      "VA reservation before x86 RAM (step 7 before 8)",
      () =>
        b().x86LegacySupport(true).build(
          MemoryLayout.fromRanges([new MemoryRange(MiB, 4n * MiB)], [
            new MemoryRange(1n << 62n, (1n << 62n) + 0x1000n),
          ]),
        ),
      "vaMapper",
    ],
    [
      "private mode never checks the backing size: the reservation fails instead",
      () =>
        b().privateMemory(true).build(
          MemoryLayout.fromRanges([new MemoryRange(0n, (1n << 63n) + 0x1000n)], []),
        ),
      "vaMapper",
    ],
  ];
  for (const [name, fn, kind] of cases) {
    await t.step(name, () => {
      let caught: unknown;
      try {
        fn();
      } catch (error) {
        caught = error;
      }
      assert.ok(caught instanceof MemoryBuildError, `${name}: got ${caught}`);
      assert.equal(caught.kind, kind);
    });
  }
});

Deno.test("successful builds", async (t) => {
  await t.step("shared memory: sealed guest-ram memfd, one ram region per range", () => {
    const layout = MemoryLayout.fromGaps(6n * MiB, [new MemoryRange(2n * MiB, 4n * MiB)]);
    using manager = new GuestMemoryBuilder().build(layout);
    assert.equal(managerInternals(manager).va.size, 8n * MiB);
    assert.equal(managerInternals(manager).va.base % VA_ALIGNMENT, 0n);
    assert.equal(VA_ALIGNMENT, 2n * MiB);
    assert.deepEqual(managerInternals(manager).ramRegions.map((r) => `${r.range}`), [
      "0x0-0x200000",
      "0x400000-0x800000",
    ]);
    for (const { handle } of managerInternals(manager).ramRegions) {
      assert.equal(handle.name, "ram");
      assert.equal(handle.priority, RAM_PRIORITY);
      assert.equal(handle.isActive, true);
      assert.deepEqual(handle.mapParams, { writable: true, executable: true, prefetch: false });
    }
    // RAM is packed in the file: the second range starts at offset 2 MiB.
    assert.deepEqual(
      managerInternals(manager).va.entries().map((
        e,
      ) => [`${e.range}`, e.kind, e.fileOffset, e.writable]),
      [["0x0-0x200000", "shared", 0n, true], ["0x400000-0x800000", "shared", 2n * MiB, true]],
    );
    using backing = manager.sharedMemoryBacking()!;
    const base = managerInternals(manager).va.base.toString(16);
    const line = readTextFile("/proc/self/maps").split("\n").find((l) => l.startsWith(`${base}-`));
    assert.match(line ?? "", / rw-s 00000000 .* \/memfd:guest-ram \(deleted\)$/);
    using fd = duplicateBacking(backing);
    assert.equal(fd.size(), 6n * MiB);
    assert.equal(fd.seals(), GUEST_RAM_SEALS);
    assert.equal(
      GUEST_RAM_SEALS,
      Fcntl.F_SEAL_SHRINK | Fcntl.F_SEAL_GROW | Fcntl.F_SEAL_SEAL,
    );
  });

  await t.step("prefetch is requested in shared mode only", () => {
    {
      using manager = new GuestMemoryBuilder().prefetchRam(true).build(SMALL);
      assert.equal(managerInternals(manager).ramRegions[0].handle.mapParams?.prefetch, true);
    }
    {
      using manager = new GuestMemoryBuilder().prefetchRam(true).privateMemory(true).build(SMALL);
      assert.equal(managerInternals(manager).ramRegions[0].handle.mapParams?.prefetch, false);
    }
  });

  await t.step("VTL2 range is RAM too, packed after the layout's RAM", () => {
    const layout = MemoryLayout.fromGaps(4n * MiB, [new MemoryRange(4n * MiB, 8n * MiB)], {
      vtl2Range: new MemoryRange(16n * MiB, 18n * MiB),
    });
    using manager = new GuestMemoryBuilder().build(layout);
    assert.equal(managerInternals(manager).va.size, 18n * MiB);
    assert.deepEqual(
      managerInternals(manager).va.entries().map((e) => [`${e.range}`, e.fileOffset]),
      [["0x0-0x400000", 0n], ["0x1000000-0x1200000", 4n * MiB]],
    );
  });

  await t.step("x86 legacy: 16 regions in place of the first range, file offsets packed", () => {
    const layout = MemoryLayout.fromGaps(4n * MiB, [new MemoryRange(2n * MiB, 3n * MiB)]);
    using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(layout);
    const ranges = managerInternals(manager).ramRegions.map((r) => `${r.range}`);
    assert.deepEqual(ranges, [
      "0x0-0xa0000",
      "0xa0000-0xc0000",
      "0xc0000-0xc4000",
      "0xc4000-0xc8000",
      "0xc8000-0xcc000",
      "0xcc000-0xd0000",
      "0xd0000-0xd4000",
      "0xd4000-0xd8000",
      "0xd8000-0xdc000",
      "0xdc000-0xe0000",
      "0xe0000-0xe4000",
      "0xe4000-0xe8000",
      "0xe8000-0xec000",
      "0xec000-0xf0000",
      "0xf0000-0x100000",
      "0x100000-0x200000",
      "0x300000-0x500000",
    ]);
    // Each region maps the file at its own guest offset (no holes: 2 MiB, then the rest).
    const regions = manager.inspect().regions as Record<string, { mappings: object }>;
    assert.deepEqual(regions["0xc4000-0xc8000:ram"].mappings, {
      "0xc4000-0xc8000": { writable: true, file_offset: "0xc4000" },
    });
    assert.deepEqual(regions["0x300000-0x500000:ram"].mappings, {
      "0x300000-0x500000": { writable: true, file_offset: "0x200000" },
    });
  });

  await t.step("x86 legacy with exactly 1 MiB of low RAM: no empty region", () => {
    const layout = MemoryLayout.fromGaps(2n * MiB, [new MemoryRange(MiB, 2n * MiB)]);
    using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(layout);
    assert.equal(managerInternals(manager).ramRegions.length, 16);
    assert.equal(`${managerInternals(manager).ramRegions[14].range}`, "0xf0000-0x100000");
    assert.equal(`${managerInternals(manager).ramRegions[15].range}`, "0x200000-0x300000");
  });

  await t.step("private memory: anonymous entries at base + gpa, no shared backing", () => {
    using manager = new GuestMemoryBuilder().privateMemory(true).build(SMALL);
    assert.equal(manager.sharedMemoryBacking(), undefined);
    assert.deepEqual(
      managerInternals(manager).va.entries().map((
        e,
      ) => [`${e.range}`, e.kind, e.hostAddress - managerInternals(manager).va.base]),
      [["0x0-0x400000", "private", 0n]],
    );
    assert.equal(PRIVATE_RAM_NAME, "guest-ram-private");
  });

  await t.step("options chain and return the same builder", () => {
    const builder = new GuestMemoryBuilder();
    assert.equal(builder.pinMappings(true), builder);
    assert.equal(builder.prefetchRam(true), builder);
    assert.equal(builder.vtl0AliasMap(undefined), builder);
    assert.equal(builder.existingBacking(undefined), builder);
    assert.equal(builder.x86LegacySupport(false), builder);
    assert.equal(builder.privateMemory(false), builder);
    assert.equal(builder.transparentHugepages(false), builder);
    assert.equal(builder.hugepages(2n * MiB), builder);
  });

  await t.step("one builder builds independent managers", () => {
    const builder = new GuestMemoryBuilder();
    using a = builder.build(SMALL);
    using b = builder.build(SMALL);
    assert.notEqual(managerInternals(a).va.base, managerInternals(b).va.base);
    a.client().guestMemory().writeU8(0x1000n, 7);
    assert.equal(b.client().guestMemory().readU8(0x1000n), 0);
  });
});

Deno.test("VaMapper.reserve with an alignment", async (t) => {
  for (const alignment of [2n * MiB, GiB]) {
    await t.step(`starts at a multiple of ${new MemorySize(alignment)}`, () => {
      for (let i = 0; i < 4; i++) {
        using va = VaMapper.reserve(6n * MiB + 0x1000n, alignment);
        assert.equal(va.base % alignment, 0n);
        assert.equal(va.size, 6n * MiB + 0x1000n);
      }
    });
  }
});
