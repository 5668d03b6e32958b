/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * A Worker of the host dirty log test: marks the pages it is given in a
 * shared log, one at a time, publishing after each how many it has marked
 * (so the main thread knows which marks completed before its drain),
 * with a short pause between marks.
 *
 * @module
 */

import { HostDirtyLog } from "../../mapping/_host_dirty_log.ts";

/** What the main thread sends. */
export interface DirtyLogJob {
  readonly log: SharedArrayBuffer;
  /**
   * `Int32Array`: slot `index` is set to the number of pages marked; slot 2
   * counts the Workers ready; they start when slot 3 becomes non-zero.
   */
  readonly progress: SharedArrayBuffer;
  readonly index: number;
  /** Page numbers to mark, in order. */
  readonly pages: readonly number[];
}

self.onmessage = (event: MessageEvent<DirtyLogJob>) => {
  const job = event.data;
  const log = new HostDirtyLog(job.log);
  const progress = new Int32Array(job.progress);
  Atomics.add(progress, 2, 1);
  Atomics.wait(progress, 3, 0);
  let spin = 0;
  for (let k = 0; k < job.pages.length; k++) {
    log.mark(job.pages[k] * 4096, 1);
    Atomics.store(progress, job.index, k + 1);
    // A short pause, so that the marks spread over many drains.
    for (let i = 0; i < 300; i++) spin += i;
  }
  Atomics.add(progress, job.index, spin & 0); // (keeps the pause from being optimized away)
};
