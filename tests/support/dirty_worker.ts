/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * A Worker of the dirty tracking test: writes one word into each page it
 * is given through a shared `GuestMemoryClient`, then says so.
 *
 * @module
 */

import { GuestMemoryClient } from "../../mod.ts";

/** What the main thread sends. */
export interface DirtyJob {
  readonly client: unknown;
  /** Guest addresses to write a word at. */
  readonly addresses: readonly number[];
}

self.onmessage = (event: MessageEvent<DirtyJob>) => {
  const job = event.data;
  using memory = GuestMemoryClient.fromShare(job.client, { name: "dirty worker" }).guestMemory();
  for (const address of job.addresses) memory.writeU32(address, 0xd1d1d1d1);
  self.postMessage("done");
};
