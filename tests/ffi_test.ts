import assert from "node:assert/strict";
import { Fcntl, Memfd, Mman } from "../ffi/_constants.ts";
import { Errno, errnoName } from "../ffi/_errno.ts";
import { HostMapping } from "../ffi/_host_mapping.ts";
import { hostBytes, hostCopy, hostCopyPageRuns, hostIsZero } from "../ffi/_host_memory.ts";
import { cString, lastErrno, libc, strerror } from "../ffi/_libc.ts";
import { mmap, mprotect, munmap, protFor } from "../ffi/_mman.ts";
import { hugetlbMemfdFlags, OwnedFd } from "../ffi/_owned_fd.ts";
import { check, checkRestarting, SyscallError } from "../ffi/syscall_error.ts";
import { listDirectory, readTextFile, writeTextFile } from "../ffi/_proc_files.ts";
import { hostPageSize } from "../ffi/_system.ts";
import { MissingPermissionError } from "../mod.ts";
import { openFdCount } from "./support/requirements.ts";

function openFds(): Set<number> {
  return new Set(listDirectory("/proc/self/fd").map(Number));
}

/** The /proc/self/maps lines that start at `address`. */
function mapsLinesAt(address: bigint): string[] {
  const prefix = `${address.toString(16)}-`;
  return readTextFile("/proc/self/maps").split("\n").filter((l) => l.startsWith(prefix));
}

Deno.test("ffi round trip: memfd + mmap + write + read back + munmap", async (t) => {
  const before = openFdCount();

  await t.step("two shared mappings of one memfd see the same bytes", () => {
    using fd = OwnedFd.memfd("membacking-ffi-test", Memfd.MFD_CLOEXEC);
    fd.truncate(0x2000n);
    assert.equal(fd.size(), 0x2000n);
    const rw = Mman.PROT_READ | Mman.PROT_WRITE;
    using writer = HostMapping.shared(fd.fd, 0n, 0x2000n, rw);
    using reader = HostMapping.shared(fd.fd, 0x1000n, 0x1000n, Mman.PROT_READ);
    assert.notEqual(writer.address, reader.address);

    const pattern = Uint8Array.from({ length: 0x1000 }, (_, i) => (i * 7 + 3) & 0xff);
    writer.bytes(0x1000n).set(pattern);
    writer.bytes()[0] = 0x5a;
    assert.deepEqual(reader.bytes(), pattern);
    assert.equal(reader.bytes().length, 0x1000);

    // Raw memcpy between host addresses, then read back through the view.
    hostCopy(writer.address, reader.address + 0x10n, 4n);
    assert.deepEqual([...hostBytes(writer.address, 4n)], [...pattern.slice(0x10, 0x14)]);
    assert.equal(hostBytes(writer.address, 0n).length, 0);

    assert.throws(() => writer.bytes(0x1000n, 0x2000n), {
      name: "RangeError",
      message: "view 4096+8192 is outside the 8192-byte mapping",
    });

    reader.unmap();
    assert.equal(reader.isMapped, false);
    assert.throws(() => reader.address, { message: "host mapping has been disposed" });
    reader.unmap(); // idempotent
  });

  await t.step("page runs are copied, and only they", () => {
    const pages = 16;
    using source = HostMapping.anonymous(BigInt(pages) * 4096n, true);
    using dest = HostMapping.anonymous(BigInt(pages) * 4096n, true);
    source.bytes().forEach((_, i, bytes) => bytes[i] = (i >> 12) + 1); // page p holds p + 1
    // (first page, pages): 0, 3-5, 15; page 0 of the runs is the mappings' first page.
    hostCopyPageRuns(dest.address, source.address, Float64Array.of(0, 1, 3, 3, 15, 1, 9, 9), 3);
    const firsts = Array.from({ length: pages }, (_, p) => dest.bytes()[p * 4096]);
    const lasts = Array.from({ length: pages }, (_, p) => dest.bytes()[p * 4096 + 4095]);
    const expected = [1, 0, 0, 4, 5, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16];
    assert.deepEqual(firsts, expected);
    assert.deepEqual(lasts, expected);
    // Page numbers of 2^30 and above (made bigints the other way): the
    // same copy with page 0 placed 2^30 pages below the mappings.
    dest.bytes().fill(0);
    const below = 1n << 42n;
    hostCopyPageRuns(
      dest.address - below,
      source.address - below,
      Float64Array.of(2 ** 30 + 2, 2),
      1,
    );
    assert.deepEqual(Array.from({ length: 5 }, (_, p) => dest.bytes()[p * 4096 + 7]), [
      0,
      0,
      3,
      4,
      0,
    ]);
  });

  await t.step("hostIsZero compares a page at a time, to the last byte", () => {
    using map = HostMapping.anonymous(3n * 4096n, true);
    assert.equal(hostIsZero(map.address, 3 * 4096), true);
    assert.equal(hostIsZero(map.address, 0), true);
    for (const at of [0, 4095, 4096, 8191, 10000, 12287]) {
      map.bytes()[at] = 1;
      assert.equal(hostIsZero(map.address, 3 * 4096), false, `byte ${at}`);
      assert.equal(hostIsZero(map.address, at), true, `before byte ${at}`);
      assert.equal(hostIsZero(map.address + BigInt(at), 1), false, `byte ${at} alone`);
      map.bytes()[at] = 0;
    }
  });

  await t.step("raw mmap/munmap wrappers", () => {
    const page = hostPageSize();
    assert.equal(page, 4096n);
    const flags = Mman.MAP_PRIVATE | Mman.MAP_ANONYMOUS;
    const address = mmap(0n, page, protFor(true), flags, -1, 0n);
    try {
      const view = hostBytes(address, page);
      view.fill(0xab);
      assert.equal(view[4095], 0xab);
      mprotect(address, page, protFor(false));
    } finally {
      munmap(address, page);
    }
    assert.deepEqual(mapsLinesAt(address), []);
  });

  await t.step("protFor and hugetlb memfd flags", () => {
    assert.equal(protFor(false), Mman.PROT_READ);
    assert.equal(protFor(true), Mman.PROT_READ | Mman.PROT_WRITE);
    assert.equal(protFor(true, true), Mman.PROT_READ | Mman.PROT_WRITE | Mman.PROT_EXEC);
    // MFD_HUGE_2MB = 21 << 26, MFD_HUGE_1GB = 30 << 26 (include/uapi/linux/memfd.h).
    assert.equal(hugetlbMemfdFlags(2n << 20n), Memfd.MFD_HUGETLB | (21 << 26));
    assert.equal(hugetlbMemfdFlags(1n << 30n), Memfd.MFD_HUGETLB | (30 << 26));
    // From 4 GiB on the field reaches bit 31: unsigned, as memfd_create takes it.
    assert.equal(hugetlbMemfdFlags(4n << 30n), 4 + 32 * 2 ** 26);
    assert.equal(hugetlbMemfdFlags(4n << 30n), 0x8000_0004);
    assert.equal(hugetlbMemfdFlags(1n << 63n, Memfd.MFD_CLOEXEC), 0xfc00_0005);
    assert.equal(
      hugetlbMemfdFlags(2n << 20n, Memfd.MFD_CLOEXEC | Memfd.MFD_ALLOW_SEALING),
      Memfd.MFD_CLOEXEC | Memfd.MFD_ALLOW_SEALING | Memfd.MFD_HUGETLB | (21 << 26),
    );
    assert.throws(() => hugetlbMemfdFlags(1n << 64n), RangeError);
  });

  await t.step("nothing leaked", () => {
    assert.equal(openFdCount(), before);
  });
});

Deno.test("errno mapping", async (t) => {
  await t.step("EBADF from a closed fd", () => {
    const owned = OwnedFd.memfd("membacking-closed", Memfd.MFD_CLOEXEC);
    const raw = owned.fd;
    owned.close();
    assert.equal(owned.isOpen, false);
    // The number is really closed: the kernel says EBADF for it.
    assert.throws(() => check("fcntl(F_GETFD)", libc().fcntl(raw, Fcntl.F_GETFD, 0)), {
      syscall: "fcntl(F_GETFD)",
      code: "EBADF",
      message: "Bad file descriptor",
    });
    assert.throws(() => owned.fd, { message: "file descriptor has been disposed" });
    owned.close(); // idempotent

    const stale = new OwnedFd(raw);
    try {
      assert.throws(() => stale.truncate(0x1000n), (err: unknown) => {
        assert.ok(err instanceof SyscallError);
        assert.equal(err.name, "SyscallError");
        assert.equal(err.syscall, "ftruncate");
        assert.equal(err.code, "EBADF");
        assert.equal(err.errno, 9);
        assert.equal(err.message, "Bad file descriptor");
        assert.ok(
          err.stack?.startsWith("SyscallError: ftruncate failed with EBADF: Bad file descriptor"),
          err.stack,
        );
        return true;
      });
      assert.throws(() => stale.size(), { code: "EBADF", syscall: "lseek" });
      assert.throws(() => stale.seals(), { code: "EBADF", syscall: "fcntl(F_GET_SEALS)" });
    } finally {
      stale.release();
    }
    // close() of a stale descriptor reports EBADF too, and still forgets it.
    const again = new OwnedFd(raw);
    assert.throws(() => again.close(), { code: "EBADF", syscall: "close" });
    assert.equal(again.isOpen, false);
  });

  await t.step("EINVAL from a bad mmap", () => {
    const flags = Mman.MAP_PRIVATE | Mman.MAP_ANONYMOUS;
    assert.throws(() => mmap(0n, 0n, Mman.PROT_READ, flags, -1, 0n), {
      name: "SyscallError",
      syscall: "mmap",
      code: "EINVAL",
      errno: Errno.EINVAL,
      message: "Invalid argument",
    });
    // Neither MAP_SHARED nor MAP_PRIVATE.
    assert.throws(() => mmap(0n, 0x1000n, Mman.PROT_READ, Mman.MAP_ANONYMOUS, -1, 0n), {
      syscall: "mmap",
      code: "EINVAL",
    });
    assert.throws(() => HostMapping.anonymous(0n, true), { syscall: "mmap", code: "EINVAL" });
    // Unaligned address.
    assert.throws(() => munmap(0x1001n, 0x1000n), { syscall: "munmap", code: "EINVAL" });
  });

  await t.step("EBADF from mmap of a closed fd, ENOENT from open", () => {
    assert.throws(() => HostMapping.shared(-1, 0n, 0x1000n, Mman.PROT_READ), {
      syscall: "mmap",
      code: "EBADF",
    });
    assert.throws(() => OwnedFd.open("/nonexistent/membacking", Fcntl.O_RDONLY), {
      syscall: "open",
      code: "ENOENT",
      message: "No such file or directory",
    });
  });

  await t.step("errno is read right after the call", () => {
    const result = libc().close(-1);
    assert.equal(result, -1);
    assert.equal(lastErrno(), Errno.EBADF);
    assert.throws(() => check("close", libc().close(-1)), { code: "EBADF", syscall: "close" });
    assert.equal(check("dup", 5), 5, "non-failing results pass through");
  });

  await t.step("checkRestarting returns results and throws what is not EINTR, once", () => {
    let calls = 0;
    assert.equal(checkRestarting("dup", () => (calls++, 7)), 7);
    assert.equal(calls, 1);
    assert.throws(() => checkRestarting("close", () => (calls++, libc().close(-1))), {
      name: "SyscallError",
      code: "EBADF",
      syscall: "close",
      message: "Bad file descriptor",
    });
    assert.equal(calls, 2, "only EINTR is retried");
    // EINTR itself: tests/hugetlb_test.ts (fallocate under a signal storm).
  });

  await t.step("names and texts", () => {
    assert.equal(errnoName(12), "ENOMEM");
    assert.equal(errnoName(4242), "E4242");
    assert.equal(strerror(12), "Cannot allocate memory");
    const err = new SyscallError("fallocate", Errno.ENOMEM);
    assert.equal(err.message, "Cannot allocate memory");
    assert.equal(err.code, "ENOMEM");
    assert.deepEqual([...cString("ab")], [0x61, 0x62, 0]);
  });
});

Deno.test("proc files through libc", async (t) => {
  await t.step("read a /proc file and list a /proc directory", () => {
    const maps = readTextFile("/proc/self/maps");
    assert.match(maps, /\[stack\]\n/);
    assert.ok(maps.length > 4096, "longer than one read chunk would need to be small");
    const fds = listDirectory("/proc/self/fd");
    assert.ok(fds.includes("0") && fds.includes("1") && fds.includes("2"), `${fds}`);
    assert.equal(fds.includes("."), false);
    assert.equal(fds.includes(".."), false);
  });

  await t.step("errors are SyscallErrors and leak no descriptor", () => {
    const before = listDirectory("/proc/self/fd").length;
    assert.throws(() => readTextFile("/nonexistent/membacking"), {
      syscall: "open",
      code: "ENOENT",
    });
    assert.throws(() => listDirectory("/nonexistent/membacking"), {
      syscall: "opendir",
      code: "ENOENT",
    });
    assert.throws(() => readTextFile("/proc/self"), { syscall: "read", code: "EISDIR" });
    assert.throws(() => writeTextFile("/nonexistent/membacking", "x"), {
      syscall: "open",
      code: "ENOENT",
    });
    // Root may open it for writing; the write itself is then refused.
    assert.throws(() => writeTextFile("/proc/self/maps", "x"), (err: unknown) => {
      assert.ok(err instanceof SyscallError);
      assert.ok(["open", "write"].includes(err.syscall), err.syscall);
      return true;
    });
    assert.equal(listDirectory("/proc/self/fd").length, before);
  });
});

Deno.test("resources are disposable", async (t) => {
  await t.step("`using` closes fds", () => {
    const before = openFdCount();
    {
      using a = OwnedFd.memfd("membacking-using-a", Memfd.MFD_CLOEXEC);
      using b = a.duplicate();
      assert.notEqual(a.fd, b.fd);
      assert.equal(openFdCount(), before + 2);
      assert.equal(openFds().has(b.fd), true);
      // The duplicate is close-on-exec, like the original.
      assert.equal(check("fcntl(F_GETFD)", libc().fcntl(b.fd, Fcntl.F_GETFD, 0)) & 1, 1);
    }
    assert.equal(openFdCount(), before);
  });

  await t.step("`using` closes fds when the block throws", () => {
    const before = openFdCount();
    assert.throws(() => {
      using fd = OwnedFd.memfd("membacking-using-throw", Memfd.MFD_CLOEXEC);
      fd.truncate(0x1000n);
      throw new Error("boom");
    }, { message: "boom" });
    assert.equal(openFdCount(), before);
  });

  await t.step("release gives the descriptor away", () => {
    const before = openFdCount();
    const owned = OwnedFd.memfd("membacking-release", Memfd.MFD_CLOEXEC);
    const raw = owned.release();
    assert.equal(owned.isOpen, false);
    owned[Symbol.dispose](); // does not close the released descriptor
    assert.equal(openFds().has(raw), true);
    check("close", libc().close(raw));
    assert.equal(openFdCount(), before);
  });

  await t.step("seals", () => {
    using fd = OwnedFd.memfd("membacking-seals", Memfd.MFD_CLOEXEC | Memfd.MFD_ALLOW_SEALING);
    fd.truncate(0x1000n);
    fd.addSeals(Fcntl.F_SEAL_GROW | Fcntl.F_SEAL_SHRINK);
    assert.equal(fd.seals() & (Fcntl.F_SEAL_GROW | Fcntl.F_SEAL_SHRINK), 0x6);
    assert.throws(() => fd.truncate(0x2000n), { syscall: "ftruncate", code: "EPERM" });
  });

  await t.step("HostMapping dispose removes its /proc/self/maps line", () => {
    using fd = OwnedFd.memfd("membacking-maps-line", Memfd.MFD_CLOEXEC);
    fd.truncate(0x3000n);
    let address: bigint;
    {
      using mapping = HostMapping.shared(fd.fd, 0n, 0x3000n, Mman.PROT_READ);
      address = mapping.address;
      const lines = mapsLinesAt(address);
      assert.equal(lines.length, 1);
      assert.match(lines[0], /^[0-9a-f]+-[0-9a-f]+ r--s .*\/memfd:membacking-maps-line/);
      const end = (address + 0x3000n).toString(16);
      assert.ok(lines[0].startsWith(`${address.toString(16)}-${end} `), lines[0]);
    }
    assert.deepEqual(mapsLinesAt(address), []);
    const all = readTextFile("/proc/self/maps");
    assert.equal(all.includes("membacking-maps-line"), false);
  });

  await t.step("HostMapping.reserve is inaccessible", () => {
    let address: bigint;
    {
      using reservation = HostMapping.reserve(0x10000n);
      address = reservation.address;
      const lines = mapsLinesAt(address);
      assert.equal(lines.length, 1, "a PROT_NONE reservation has its own line");
      assert.match(lines[0], / ---p /);
    }
    assert.deepEqual(mapsLinesAt(address), []);
  });
});

Deno.test("missing --allow-ffi gives one line naming the permission", async (t) => {
  await t.step("the error itself", () => {
    const err = new MissingPermissionError("ffi", "to call libc");
    assert.equal(
      err.message,
      "membacking needs the ffi permission to call libc: run deno with --allow-ffi",
    );
    assert.equal(err.permission, "ffi");
    assert.equal(err.stack, `MissingPermissionError: ${err.message}`);
  });

  await t.step("a program run without --allow-ffi", async () => {
    const output = await runWithoutFfi([
      `import { MemoryRange, SharedMemoryBacking } from ${MOD};`,
      `console.log("range " + new MemoryRange(0n, 0x1000n));`,
      `using backing = SharedMemoryBacking.create(0x1000n, { name: "no-ffi" });`,
      `console.log("unreachable", backing.size);`,
    ]);
    assert.notEqual(output.code, 0);
    assert.equal(output.stdout, "range 0x0-0x1000\n", "the pure parts work without ffi");
    assert.deepEqual(output.stderr.trimEnd().split("\n"), [
      "error: Uncaught (in promise) MissingPermissionError: membacking needs the ffi " +
      "permission to call libc (mmap, memfd_create, ioctl): run deno with --allow-ffi",
    ]);
  });

  await t.step("building guest memory without --allow-ffi names the permission too", async () => {
    const output = await runWithoutFfi([
      `import { GuestMemoryBuilder, MemoryLayout } from ${MOD};`,
      `for (const privateMemory of [false, true]) {`,
      `  try {`,
      `    new GuestMemoryBuilder().privateMemory(privateMemory).build(MemoryLayout.fromGaps(1n << 20n, []));`,
      `  } catch (e) {`,
      `    console.log((e as Error).name + ": " + (e as Error).message);`,
      `  }`,
      `}`,
    ]);
    const line = "MissingPermissionError: membacking needs the ffi permission to call libc " +
      "(mmap, memfd_create, ioctl): run deno with --allow-ffi";
    assert.equal(output.stdout, `${line}\n${line}\n`, output.stderr);
  });
});

const MOD = JSON.stringify(new URL("../mod.ts", import.meta.url).href);

/** Runs a script of `lines` with `deno run` WITHOUT --allow-ffi (read only) in a scratch folder. */
async function runWithoutFfi(
  lines: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const dir = Deno.makeTempDirSync({ prefix: "membacking-perm-" });
  try {
    const script = `${dir}/main.ts`;
    Deno.writeTextFileSync(script, lines.join("\n"));
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-config", "--no-prompt", "--allow-read", script],
      cwd: dir,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decoder = new TextDecoder();
    return {
      code: output.code,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
    };
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("the fault-injection seam", async (t) => {
  const seam = await import("../ffi/_fault_injection.ts");
  const { libc, realLibc } = await import("../ffi/_libc.ts");
  const { Errno } = await import("../ffi/_errno.ts");
  const { OwnedFd } = await import("../ffi/_owned_fd.ts");
  const { Fcntl, Memfd } = await import("../ffi/_constants.ts");

  await t.step("off, libc() is the real symbol table: no wrapper, no branch", () => {
    assert.equal(seam.isActive(), false);
    assert.equal(libc(), realLibc());
    seam.startCounting();
    assert.notEqual(libc(), realLibc());
    seam.disarm();
    assert.equal(libc(), realLibc());
  });

  await t.step("calls are counted per name, fcntl by command", () => {
    seam.startCounting();
    using fd = OwnedFd.memfd("seam", Memfd.MFD_ALLOW_SEALING);
    fd.truncate(0x1000n);
    fd.addSeals(Fcntl.F_SEAL_SHRINK);
    fd.truncate(0x2000n);
    assert.deepEqual(
      [...seam.callCounts()],
      [["memfd_create", 1], ["ftruncate", 2], ["fcntl(F_ADD_SEALS)", 1]],
    );
    assert.deepEqual(seam.disarm(), {
      fired: undefined,
      errno: 0,
      trace: ["memfd_create", "ftruncate", "fcntl(F_ADD_SEALS)", "ftruncate"],
    });
  });

  await t.step(
    "the nth call of a name fails with the errno, once; the kernel never sees it",
    () => {
      using fd = OwnedFd.memfd("seam", 0);
      seam.arm("ftruncate", 2, Errno.EPERM);
      try {
        fd.truncate(0x1000n);
        assert.throws(() => fd.truncate(0x3000n), {
          name: "SyscallError",
          message: "Operation not permitted",
          syscall: "ftruncate",
          code: "EPERM",
        });
        fd.truncate(0x2000n);
      } finally {
        assert.deepEqual(seam.disarm(), {
          fired: "ftruncate",
          errno: Errno.EPERM,
          trace: ["ftruncate", "ftruncate", "ftruncate"],
        });
      }
      assert.equal(fd.size(), 0x2000n);
    },
  );

  await t.step("ioctl requests are named once registered", () => {
    seam.nameIoctls({ SEAM_TEST_REQUEST: 0x1234n });
    using fd = OwnedFd.memfd("seam", 0);
    seam.arm("ioctl(SEAM_TEST_REQUEST)", 1, Errno.EFAULT);
    try {
      assert.equal(libc().ioctl_int(fd.fd, 0x1234n, 0n), -1);
    } finally {
      assert.equal(seam.disarm().fired, "ioctl(SEAM_TEST_REQUEST)");
    }
  });
});
