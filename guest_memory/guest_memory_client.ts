import type { VaMapper } from "../mapping/_va_mapper.ts";
import { GuestMemory } from "./guest_memory.ts";

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

  /** A client for guest memory held in `va`. */
  constructor(va: VaMapper) {
    this.#va = va;
  }

  /** The accessor for guest memory; the same object on every call. */
  guestMemory(): GuestMemory {
    this.#memory ??= new GuestMemory(this.#va);
    return this.#memory;
  }
}
