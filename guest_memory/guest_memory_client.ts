import type { VaMapper } from "../mapping/_va_mapper.ts";
import type { GuestMemory } from "./guest_memory.ts";
import { newGuestMemory, newSharedGuestMemory } from "./guest_memory.ts";
import { HostDirtyLog } from "../mapping/_host_dirty_log.ts";

/** The `kind` of a shared client (what `GuestMemoryClient.share()` returns). */
const SHARE_KIND = "membacking.GuestMemoryClient";

/** Where a client's accessor reads from: the manager's own table, or a shared one. */
type Source =
  | { readonly va: VaMapper }
  | {
    readonly table: SharedArrayBuffer;
    readonly base: bigint;
    readonly size: bigint;
    readonly name: string;
    readonly dirty: SharedArrayBuffer | undefined;
  };

let construct: (source: Source) => GuestMemoryClient;

/** Makes a {@linkcode GuestMemoryClient} (internal: its constructor is private). */
export function newGuestMemoryClient(va: VaMapper): GuestMemoryClient {
  return construct({ va });
}

/**
 * Hands out the {@linkcode GuestMemory} accessor of one manager. All
 * accessors read and write through the manager's single host address
 * reservation: asking again never reserves more address space.
 *
 * A client crosses to a Worker as the plain object {@linkcode share}
 * returns (it holds a `SharedArrayBuffer`, so `postMessage` carries it);
 * {@linkcode GuestMemoryClient.fromShare} turns it back into a client
 * there, whose accessor reads and writes the same memory and follows every
 * change the manager makes. See the README's concurrency model.
 *
 * @example
 * ```ts
 * import { GuestMemoryBuilder, GuestMemoryClient, MemoryLayout } from "../mod.ts";
 * import assert from "node:assert/strict";
 *
 * using manager = new GuestMemoryBuilder().build(MemoryLayout.fromGaps(1n << 20n, []));
 * const client = manager.client();
 * assert.equal(client.guestMemory(), client.guestMemory());
 *
 * // What a Worker would receive through postMessage:
 * const share = client.share();
 * using memory = GuestMemoryClient.fromShare(share, { name: "device worker" }).guestMemory();
 * memory.writeU32(0x1000, 0xfeedf00d);
 * assert.equal(client.guestMemory().readU32(0x1000), 0xfeedf00d);
 * ```
 */
export class GuestMemoryClient {
  readonly #source: Source;
  #memory: GuestMemory | undefined;

  static {
    construct = (source) => new GuestMemoryClient(source);
  }

  private constructor(source: Source) {
    this.#source = source;
  }

  /**
   * A client from what {@linkcode share} returned, in a Worker of the same
   * process (or on the main thread).
   *
   * @param share The object `share()` returned, as `postMessage` delivered it.
   * @param options `name`: how the manager's warnings name this reader
   *   (default `worker`).
   * @returns A client whose accessor follows the manager's table.
   * @throws {TypeError} when `share` is not such an object.
   */
  static fromShare(share: unknown, options: { readonly name?: string } = {}): GuestMemoryClient {
    const s = share as Record<string, unknown> | null;
    if (
      typeof s !== "object" || s === null || s.kind !== SHARE_KIND ||
      !(s.table instanceof SharedArrayBuffer) || typeof s.base !== "bigint" ||
      typeof s.size !== "bigint"
    ) {
      throw new TypeError("not a shared guest memory client (from GuestMemoryClient.share())");
    }
    if (s.dirty !== undefined && !HostDirtyLog.isLogBuffer(s.dirty)) {
      throw new TypeError("not a shared guest memory client (from GuestMemoryClient.share())");
    }
    return new GuestMemoryClient({
      table: s.table,
      base: s.base,
      size: s.size,
      name: options.name ?? "worker",
      dirty: s.dirty,
    });
  }

  /**
   * The accessor for guest memory; the same object on every call. From a
   * shared client, the accessor takes one of the manager's 64 reader slots
   * until it is disposed.
   *
   * @returns The accessor.
   */
  guestMemory(): GuestMemory {
    if (this.#memory === undefined) {
      const source = this.#source;
      this.#memory = "va" in source ? newGuestMemory(source.va) : newSharedGuestMemory(
        source.table,
        source.base,
        source.size,
        source.name,
        source.dirty,
      );
    }
    return this.#memory;
  }

  /**
   * This client as a plain object for `postMessage`. From the first call
   * on, every change that takes memory away from the guest waits (at most
   * a bounded time) until no Worker is still inside an access that could
   * touch it. `dirty` is the host dirty log: the Worker's writes are marked
   * in it while dirty tracking is on (see `./snapshot`).
   *
   * @returns The object to post to a Worker.
   */
  share(): {
    readonly kind: "membacking.GuestMemoryClient";
    readonly table: SharedArrayBuffer;
    readonly base: bigint;
    readonly size: bigint;
    readonly dirty: SharedArrayBuffer | undefined;
  } {
    const source = this.#source;
    if ("va" in source) {
      return {
        kind: SHARE_KIND,
        table: source.va.share(),
        base: source.va.base,
        size: source.va.size,
        dirty: source.va.dirtyLog.buffer,
      };
    }
    return {
      kind: SHARE_KIND,
      table: source.table,
      base: source.base,
      size: source.size,
      dirty: source.dirty,
    };
  }
}
