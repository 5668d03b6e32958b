/**
 * `deno task demo`: builds guest memory, attaches a KVM guest and shows,
 * step by step, what the guest sees as RAM visibility changes and device
 * memory comes and goes. Run with `--help` for the options.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { MemorySize } from "../mod.ts";
import { KvmSystem } from "../kvm.ts";
import { DEFAULT_BIOS, type FirmwareReport, runFirmware } from "./firmware.ts";
import { renderFirmwareText, renderJson, renderText } from "./render.ts";
import { type DemoOptions, MIN_MEMORY, runScenario } from "./scenario.ts";
import { Style } from "./table.ts";

const HELP = `membacking demo: guest memory, seen by a KVM guest

Usage: deno task demo [options]

First, when SeaBIOS is installed (apt-get install seabios) and KVM is
there, boots it on a minimal PC built on membacking (pc/): the firmware's
output, every PAM write with the RAM visibility it produced, the region
map and KVM slots at the end of POST, our option ROM's write to read-only
shadow RAM, and a warm reset to a second banner. Then:

Builds guest memory (x86 legacy layout, an MMIO gap at 0xe0000000-0x100000000),
attaches a KVM partition and walks a short scenario, with a tiny guest
probing memory at each step: RAM reads and writes, a PAM piece made
read-only and unmapped, and a 128 KB framebuffer that shows through the VGA
window once the RAM above it is unmapped. Prints the region map and the KVM
memory slots, and exits 0 when the guest saw what it should.

Options:
  --memory <size>   guest RAM size: bytes, or with K, M, G (default 512M)
  --hugepages       back RAM with 2 MB hugetlb pages (the hugetlb pool must
                    hold enough pages, see /proc/sys/vm/nr_hugepages)
  --private         back RAM with private anonymous memory
  --thp             transparent hugepages on private RAM (needs --private)
  --prefetch        prefetch RAM into the partition when mapping it
  --no-kvm          do not use KVM, even when it is there
  --kvm-device <p>  the KVM device (default /dev/kvm)
  --bios <path>     the SeaBIOS image (default ${DEFAULT_BIOS})
  --no-firmware     do not boot SeaBIOS
  --json            print one JSON document instead of tables
  -h, --help        show this help

x86 legacy splitting (PAM pieces, VGA window) cannot be combined with
hugepages or private memory: with --hugepages or --private the demo builds
without it, skips the PAM and VGA steps, and maps the framebuffer into the
MMIO gap instead.

Without /dev/kvm (or with --no-kvm) the same scenario runs on a recording
partition; what "the guest saw" is then worked out from that partition's
memory map, and the output says so.

Colour is used on a terminal unless NO_COLOR is set.

Exit status: 0 when every observation matched, 1 when one did not, 2 when
the demo could not run (bad option, memory could not be built); errors are
one line on stderr.
`;

/** Parses `512M`, `1G`, `65536`, `2MiB` into bytes. */
export function parseSize(text: string): bigint {
  const match = /^(\d+)\s*([kmgt]?)(i?b)?$/i.exec(text.trim());
  if (match === null) throw new RangeError(`invalid memory size ${JSON.stringify(text)}`);
  const shift = { "": 0n, k: 10n, m: 20n, g: 30n, t: 40n }[match[2].toLowerCase()]!;
  return BigInt(match[1]) << shift;
}

interface MainOptions extends DemoOptions {
  readonly json: boolean;
  /** The SeaBIOS image, or undefined with --no-firmware. */
  readonly bios: string | undefined;
}

function options(args: string[]): MainOptions | undefined {
  const { values } = parseArgs({
    args,
    options: {
      memory: { type: "string", default: "512M" },
      hugepages: { type: "boolean", default: false },
      private: { type: "boolean", default: false },
      thp: { type: "boolean", default: false },
      prefetch: { type: "boolean", default: false },
      "no-kvm": { type: "boolean", default: false },
      "kvm-device": { type: "string", default: "/dev/kvm" },
      bios: { type: "string", default: DEFAULT_BIOS },
      "no-firmware": { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return undefined;
  const memorySize = parseSize(values.memory);
  if (memorySize < MIN_MEMORY) {
    throw new RangeError(
      `memory size ${new MemorySize(
        memorySize,
      )} is too small; the demo needs at least ${new MemorySize(MIN_MEMORY)}`,
    );
  }
  return {
    memorySize,
    hugepages: values.hugepages,
    privateMemory: values.private,
    thp: values.thp,
    prefetch: values.prefetch,
    kvm: !values["no-kvm"],
    kvmDevice: values["kvm-device"],
    json: values.json,
    bios: values["no-firmware"] ? undefined : values.bios,
  };
}

/** Whether the KVM device can be opened (the firmware part needs a real guest). */
function hasKvm(path: string | undefined): boolean {
  try {
    KvmSystem.open(path)[Symbol.dispose]();
    return true;
  } catch {
    return false;
  }
}

function main(args: string[]): number {
  const chosen = options(args);
  if (chosen === undefined) {
    console.log(HELP.trimEnd());
    return 0;
  }
  const style = Style.forStdout();
  let firmware: FirmwareReport | undefined;
  if (chosen.bios !== undefined) {
    const kvm = chosen.kvm && hasKvm(chosen.kvmDevice);
    firmware = runFirmware(chosen.bios, kvm);
  }
  // Printed together, so that a scenario that cannot run leaves stdout empty.
  const report = runScenario(chosen);
  if (chosen.json) {
    console.log(renderJson(report, firmware));
  } else {
    if (firmware !== undefined) console.log(`${renderFirmwareText(style, firmware)}\n`);
    console.log(renderText(style, report));
  }
  if (firmware?.status === "booted" && !firmware.ok) {
    console.error("error: SeaBIOS did not do what it should on membacking");
    return 1;
  }
  if (!report.ok) {
    console.error("error: the guest did not see what the region map says it should");
    return 1;
  }
  return 0;
}

if (import.meta.main) {
  let code: number;
  try {
    code = main(Deno.args);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const cause = error instanceof Error && error.cause instanceof Error
      ? `: ${error.cause.message}`
      : "";
    const errorCode = (error as { code?: unknown }).code;
    const hint = typeof errorCode === "string" && errorCode.startsWith("ERR_PARSE_ARGS")
      ? " (see --help)"
      : "";
    console.error(`error: ${message}${cause}${hint}`);
    code = 2;
  }
  Deno.exit(code);
}
