import type { VaMapper } from "../mapping/_va_mapper.ts";
import type { GuestMemory } from "./guest_memory.ts";
import { newGuestMemory } from "./guest_memory.ts";

let construct: (va: VaMapper) => GuestMemoryClient;

/** Makes a {@linkcode GuestMemoryClient} (internal: its constructor is private). */
export function newGuestMemoryClient(va: VaMapper): GuestMemoryClient {
  return construct(va);
}

/**
 * Hands out the {@linkcode GuestMemory} accessor of one manager. All
 * accessors read and write through the manager's single host address
 * reservation: asking again never reserves more address space.
 *
 * @example
 * ```ts ignore
 * import { GuestMemoryClient, VaMapper } from "../mod.ts";
 * using va = VaMapper.reserve(1n << 30n);
 * const client = new GuestMemoryClient(va);
 * console.log(client.guestMemory() === client.guestMemory()); // true
 * ```
 */
export class GuestMemoryClient {
  #va: VaMapper;
  #memory: GuestMemory | undefined;

  static {
    construct = (va) => new GuestMemoryClient(va);
  }

  private constructor(va: VaMapper) {
    this.#va = va;
  }

  /** The accessor for guest memory; the same object on every call. */
  guestMemory(): GuestMemory {
    this.#memory ??= newGuestMemory(this.#va);
    return this.#memory;
  }
}
