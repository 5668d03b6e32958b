/**
 * Virtual trust levels of a partition. Memory is attached per VTL; VTL2 also
 * gets the VTL0 alias map when the builder was given an offset.
 *
 * @example
 * ```ts
 * import { Vtl } from "./vtl.ts";
 * import assert from "node:assert/strict";
 * const vtl: Vtl = Vtl.Vtl2;
 * assert.equal(vtl, 2);
 * ```
 */
export const Vtl = {
  /** The normal guest. */
  Vtl0: 0,
  /** The secure kernel level. */
  Vtl1: 1,
  /** The paravisor level. */
  Vtl2: 2,
} as const;

/** One of the {@linkcode Vtl} values. */
export type Vtl = typeof Vtl[keyof typeof Vtl];
