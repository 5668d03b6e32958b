/**
 * A PC BIOS image as device memory: read-only below 4 GiB, with its low
 * alias below 1 MiB split on the PAM piece boundaries.
 *
 * @module
 */

import type { DeviceMemoryControl } from "../device_memory/device_memory_control.ts";
import { MemoryRange } from "../layout/memory_range.ts";
import type { GuestMemoryManager } from "../manager/guest_memory_manager.ts";
import { SharedMemoryBacking } from "../manager/shared_memory_backing.ts";
import { X86ChipsetError } from "./x86_chipset_error.ts";

const FOUR_GIB = 1n << 32n;
const ONE_MIB = 0x100000n;
/** The BIOS area below 1 MiB that can alias the top of the image. */
const LOW_ALIAS_MAX = 0x20000n;
/** Boundaries of the PAM pieces in the low alias area. */
const LOW_BOUNDS = [0xe0000n, 0xe4000n, 0xe8000n, 0xec000n, 0xf0000n, ONE_MIB];
/** Largest image accepted (a 16 MiB firmware flash). */
const MAX_ROM = 0x1000000;

/**
 * Options of {@linkcode BiosRom.map}.
 *
 * @example
 * ```ts
 * import type { BiosRomOptions } from "./bios_rom.ts";
 * import assert from "node:assert/strict";
 * const options: BiosRomOptions = { name: "seabios" };
 * assert.equal(options.name, "seabios");
 * ```
 */
export interface BiosRomOptions {
  /** Name of the shared memory object and prefix of the device regions (default `bios`). */
  readonly name?: string;
}

/**
 * A BIOS image in guest memory as real hardware decodes it: the whole image
 * read-only just below 4 GiB (where the reset vector, 0xfffffff0, lies),
 * and its last 128 KiB (or all of it, when smaller) aliased read-only just
 * below 1 MiB (0xe0000-0x100000 for a 128 KiB or larger image).
 *
 * Both are device memory (priority 0) over one sealed shared memory object
 * holding the image. The low alias lies under the RAM pieces of an x86
 * legacy manager, and the nesting rule wants a lower-priority region inside
 * the RAM region it overlaps, so the alias is one device region per PAM
 * piece (0xe0000, 0xe4000, 0xe8000, 0xec000 and 0xf0000-0x100000): when the
 * PAM decoder makes a piece Unmapped, the ROM under it shows through; when
 * it makes it ReadOnly or ReadWrite, the RAM copy does. Guest writes to the
 * ROM exit to the VMM as MMIO.
 *
 * The manager's address space must reach 4 GiB (a layout whose MMIO gap
 * ends at 4 GiB does).
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, MemoryLayout, MemoryRange, RamVisibility } from "../mod.ts";
 * import { BiosRom } from "../x86.ts";
 * import assert from "node:assert/strict";
 *
 * using manager = new GuestMemoryBuilder().x86LegacySupport(true).build(
 *   MemoryLayout.fromGaps(2n << 20n, [new MemoryRange(0xe0000000n, 0x100000000n)]),
 * );
 * const image = new Uint8Array(0x20000).fill(0xea);
 * using rom = BiosRom.map(manager, image);
 * assert.equal(`${rom.highRange}`, "0xfffe0000-0x100000000");
 * const memory = manager.client().guestMemory();
 * assert.equal(memory.readU8(0xfffffff0n), 0xea);
 * // Hiding the RAM of a PAM piece shows the ROM's low alias under it.
 * manager.ramVisibilityControl().setRamVisibility(
 *   new MemoryRange(0xf0000n, 0x100000n),
 *   RamVisibility.Unmapped,
 * );
 * assert.equal(memory.readU8(0xffff0n), 0xea);
 * ```
 */
export class BiosRom implements Disposable {
  /** The image, shared with the guest (read-only to it). */
  readonly backing: SharedMemoryBacking;
  /** Where the whole image is, ending at 4 GiB. */
  readonly highRange: MemoryRange;
  /** The pieces of the low alias, in address order. */
  readonly lowRanges: readonly MemoryRange[];
  readonly #controls: DeviceMemoryControl[];
  #disposed = false;

  private constructor(
    backing: SharedMemoryBacking,
    highRange: MemoryRange,
    lowRanges: MemoryRange[],
    controls: DeviceMemoryControl[],
  ) {
    this.backing = backing;
    this.highRange = highRange;
    this.lowRanges = lowRanges;
    this.#controls = controls;
  }

  /**
   * Copies `image` into a new shared memory object and maps it into the
   * guest of `manager`, high and low.
   *
   * @param manager The guest memory manager.
   * @param image The BIOS image (a multiple of 4 KiB, at most 16 MiB).
   * @param options Name.
   * @returns The mapped ROM; dispose it to take it out of the guest.
   * @throws {X86ChipsetError} `badRomSize`.
   * @throws {RegionError} when a region does not fit (`outsideAddressSpace`
   *   below 4 GiB of address space, `overlap` against other device memory).
   * @throws {SyscallError} when the shared memory cannot be created.
   */
  static map(
    manager: GuestMemoryManager,
    image: Uint8Array,
    options: BiosRomOptions = {},
  ): BiosRom {
    const size = image.length;
    if (size <= 0 || size % 0x1000 !== 0 || size > MAX_ROM) {
      throw new X86ChipsetError({ kind: "badRomSize", size, max: MAX_ROM });
    }
    const name = options.name ?? "bios";
    using stack = new DisposableStack();
    const length = BigInt(size);
    const backing = stack.use(SharedMemoryBacking.create(length, { name, contents: image }));
    const mapper = manager.deviceMemoryMapper();
    const controls: DeviceMemoryControl[] = [];
    stack.defer(() => {
      for (const control of controls) control.unmapFromGuest();
    });
    const place = (label: string, gpa: bigint, fileOffset: bigint, len: bigint) => {
      const { control, region } = mapper.newRegion(len, label);
      region.map(0n, backing, fileOffset, len, false);
      controls.push(control);
      control.mapToGuest(gpa, false);
    };

    const highRange = new MemoryRange(FOUR_GIB - length, FOUR_GIB);
    place(`${name}-high`, highRange.start, 0n, length);
    const aliasLength = length < LOW_ALIAS_MAX ? length : LOW_ALIAS_MAX;
    const aliasStart = ONE_MIB - aliasLength;
    const lowRanges: MemoryRange[] = [];
    const bounds = [aliasStart, ...LOW_BOUNDS.filter((b) => b > aliasStart)];
    for (let i = 0; i + 1 < bounds.length; i++) {
      const range = new MemoryRange(bounds[i], bounds[i + 1]);
      // Offset in the image: the alias is its last `aliasLength` bytes.
      place(
        `${name}-${range.start.toString(16)}`,
        range.start,
        length - (ONE_MIB - range.start),
        range.len,
      );
      lowRanges.push(range);
    }
    stack.move();
    return new BiosRom(backing, highRange, lowRanges, controls);
  }

  /** Takes the ROM out of the guest and closes its shared memory; idempotent. */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    try {
      for (const control of this.#controls) control.unmapFromGuest();
    } finally {
      this.backing[Symbol.dispose]();
    }
  }
}
