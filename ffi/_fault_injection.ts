/**
 * The fault-injection seam, for tests: makes the Nth call of a named libc
 * function (or `ioctl` request, or `fcntl` command) fail with a chosen
 * errno, and counts the calls per name so that a test can enumerate "the
 * k-th system call of this operation".
 *
 * Zero cost when off: {@linkcode libc} hands out the real symbol table, and
 * only while the seam is armed or counting does it hand out a wrapping one
 * (the switch is one assignment, {@linkcode swapLibc}). An injected failure
 * does not reach the kernel: the wrapper sets `errno` and returns what the
 * C function returns on failure (`-1`, `MAP_FAILED`, `NULL`), so the code
 * above sees exactly what a real failure looks like.
 *
 * Call names are the ones {@linkcode SyscallError} reports: `mmap`,
 * `madvise`, `fcntl(F_ADD_SEALS)`, `ioctl(KVM_SET_USER_MEMORY_REGION)` (ioctl
 * requests are named through {@linkcode nameIoctls}; unnamed ones read
 * `ioctl(0x...)`), `prctl`, `membarrier`, `copy_file_range`; the form of
 * `madvise` run on Deno's blocking pool is `madvise_nonblocking` (its
 * failure is a settled promise of -1, errno set on this thread).
 *
 * @module
 */

import { Fcntl } from "./_constants.ts";
import { LIBC_SYMBOLS, type LibcSymbols, realLibc, swapLibc } from "./_libc.ts";

type SymbolName = keyof typeof LIBC_SYMBOLS;

/**
 * The symbols a fault can be injected into: the calls that change or query
 * kernel state for the library. Not faultable: errno and error texts,
 * `memcpy`, `sysconf`, `close` (a failed close leaves nothing to undo), and
 * the /proc readers tests use to look at the state (`read`, `write`,
 * `opendir`, `readdir`, `closedir`).
 */
const FAULTABLE: ReadonlySet<SymbolName> = new Set<SymbolName>([
  "mmap",
  "munmap",
  "mprotect",
  "madvise",
  "madvise_nonblocking",
  "mlock",
  "munlock",
  "memfd_create",
  "ftruncate",
  "fallocate",
  "fstat",
  "lseek",
  "fcntl",
  "ioctl",
  "ioctl_int",
  "prctl",
  "prctl_str",
  "syscall_membarrier",
  "open",
  "pread",
  "pwrite",
  "dup",
  "copy_file_range",
]);

const FCNTL_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(Fcntl).filter(([name]) => name.startsWith("F_") && !name.startsWith("F_SEAL"))
    .map(([name, value]) => [value, name]),
);

/** One armed fault. */
interface Armed {
  readonly name: string;
  readonly nth: number;
  readonly errno: number | ((name: string) => number);
  readonly except: ReadonlySet<string>;
  readonly onFire: ((name: string) => void) | undefined;
  seen: number;
}

/** Options of {@linkcode arm}. */
export interface ArmOptions {
  /** With name `"*"`: the calls that are never failed (counted all the same). */
  readonly except?: readonly string[];
  /**
   * Runs when the fault fires, before the failure is returned: to do what
   * the kernel may do before it fails a call (a failed `MAP_FIXED` `mmap`
   * may already have unmapped the old range).
   */
  readonly onFire?: (name: string) => void;
}

/** What happened between {@linkcode arm} (or {@linkcode startCounting}) and {@linkcode disarm}. */
export interface FaultReport {
  /** The name of the call the fault was injected into, if it fired. */
  readonly fired: string | undefined;
  /** The errno it failed with (0 when it did not fire). */
  readonly errno: number;
  /** Every faultable call made, by name, in order. */
  readonly trace: readonly string[];
}

let armed: Armed | undefined;
let counting = false;
let fired: string | undefined;
let firedErrno = 0;
let trace: string[] = [];
const ioctlNames = new Map<bigint, string>();
let wrapped: LibcSymbols | undefined;
const errnoCell = new Int32Array(1);

/**
 * Names ioctl requests for the seam (`{ KVM_RUN: 0xae80n, ... }`): calls
 * with those requests are counted and matched as `ioctl(<name>)`.
 */
export function nameIoctls(names: Readonly<Record<string, bigint>>): void {
  for (const [name, request] of Object.entries(names)) ioctlNames.set(request, name);
}

/**
 * Arms one fault: the `nth` call (1-based, counted from now) named `name`
 * fails with `errno` (or with what `errno` returns for the name of the
 * call that fails); later calls go through. `name` `"*"` matches every
 * faultable call whose name is not in `options.except`. Calls are also traced as
 * {@linkcode startCounting} does. One fault at a time: arming again
 * replaces the previous one.
 */
export function arm(
  name: string,
  nth: number,
  errno: number | ((name: string) => number),
  options: ArmOptions = {},
): void {
  if (!Number.isInteger(nth) || nth < 1) throw new RangeError(`nth must be 1 or more, not ${nth}`);
  armed = { name, nth, errno, except: new Set(options.except), onFire: options.onFire, seen: 0 };
  fired = undefined;
  trace = [];
  swapLibc(wrapper());
}

/** Traces every faultable call from now on, failing none. */
export function startCounting(): void {
  armed = undefined;
  counting = true;
  fired = undefined;
  trace = [];
  swapLibc(wrapper());
}

/** Stops injecting and tracing (the real symbols again); what happened since arming. */
export function disarm(): FaultReport {
  const report: FaultReport = { fired, errno: fired === undefined ? 0 : firedErrno, trace };
  armed = undefined;
  counting = false;
  fired = undefined;
  trace = [];
  swapLibc(undefined);
  return report;
}

/** Whether a fault is armed or calls are being traced. */
export function isActive(): boolean {
  return armed !== undefined || counting;
}

/** The calls traced so far, counted per name. */
export function callCounts(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const name of trace) counts.set(name, (counts.get(name) ?? 0) + 1);
  return counts;
}

/** Records a call named `label`; whether it is the one to fail. */
function intercept(label: string): boolean {
  trace.push(label);
  const fault = armed;
  if (fault === undefined || fired !== undefined) return false;
  if (fault.name === "*" ? fault.except.has(label) : fault.name !== label) return false;
  if (++fault.seen !== fault.nth) return false;
  fired = label;
  firedErrno = typeof fault.errno === "number" ? fault.errno : fault.errno(label);
  return true;
}

function labelOf(symbol: SymbolName, args: readonly unknown[]): string {
  switch (symbol) {
    case "ioctl":
    case "ioctl_int": {
      const request = args[1] as bigint;
      return `ioctl(${ioctlNames.get(request) ?? `0x${request.toString(16)}`})`;
    }
    case "fcntl": {
      const cmd = args[1] as number;
      return `fcntl(${FCNTL_NAMES.get(cmd) ?? cmd})`;
    }
    case "prctl_str":
      return "prctl";
    case "syscall_membarrier":
      return "membarrier";
    default:
      return symbol;
  }
}

function failureValue(result: string): unknown {
  switch (result) {
    case "i32":
      return -1;
    case "i64":
    case "isize":
      return -1n;
    case "usize":
      return 0xffff_ffff_ffff_ffffn; // MAP_FAILED
    default:
      return null;
  }
}

/** Sets the calling thread's errno, as the failing C function would have. */
function setErrno(symbols: LibcSymbols, errno: number): void {
  errnoCell[0] = errno;
  const where = symbols.__errno_location();
  if (where === null) return;
  symbols.memcpy(
    BigInt(Deno.UnsafePointer.value(where)),
    BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(errnoCell))),
    4n,
  );
}

/** The wrapping symbol table (made once). */
function wrapper(): LibcSymbols {
  if (wrapped !== undefined) return wrapped;
  const symbols = realLibc();
  const table: Record<string, unknown> = {};
  for (const symbol of Object.keys(LIBC_SYMBOLS) as SymbolName[]) {
    const call = symbols[symbol] as unknown as (...args: unknown[]) => unknown;
    if (!FAULTABLE.has(symbol)) {
      table[symbol] = call;
      continue;
    }
    const definition: Deno.ForeignFunction = LIBC_SYMBOLS[symbol];
    const value = failureValue(definition.result as string);
    const failure = definition.nonblocking === true ? Promise.resolve(value) : value;
    table[symbol] = (...args: unknown[]): unknown => {
      const label = labelOf(symbol, args);
      if (intercept(label)) {
        armed!.onFire?.(label);
        setErrno(symbols, firedErrno);
        return failure;
      }
      return call(...args);
    };
  }
  wrapped = table as unknown as LibcSymbols;
  return wrapped;
}
