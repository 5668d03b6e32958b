/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * A Worker of the host dirty log test: marks the pages it is given in a
 * shared log, one at a time, publishing after each how many it has marked
 * (so the main thread knows which marks completed before its drain),
 * paced by the main thread's drains.
 *
 * @module
 */

import { HostDirtyLog } from "../../mapping/_host_dirty_log.ts";

/** What the main thread sends. */
export interface DirtyLogJob {
  readonly log: SharedArrayBuffer;
  /**
   * `Int32Array`: slot `index` is set to the number of pages marked; slot 2
   * counts the Workers ready; they start when slot 3 becomes non-zero; slot
   * 4 counts the main thread's drains.
   */
  readonly progress: SharedArrayBuffer;
  readonly index: number;
  /** Page numbers to mark, in order. */
  readonly pages: readonly number[];
  /** At most this many marks per drain of the main thread (so that they interleave). */
  readonly marksPerDrain: number;
}

self.onmessage = (event: MessageEvent<DirtyLogJob>) => {
  const job = event.data;
  const log = new HostDirtyLog(job.log);
  const progress = new Int32Array(job.progress);
  Atomics.add(progress, 2, 1);
  Atomics.wait(progress, 3, 0);
  // Paced by the drains made since this Worker started, however the
  // threads are scheduled.
  const start = Atomics.load(progress, 4);
  for (let k = 0; k < job.pages.length; k++) {
    while (Atomics.load(progress, 4) < start + Math.floor(k / job.marksPerDrain));
    log.mark(job.pages[k] * 4096, 1);
    Atomics.store(progress, job.index, k + 1);
  }
};
