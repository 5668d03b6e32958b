/**
 * Where non-fatal problems go: DMA target failures, prefetch failures, THP
 * advice refused. By default they are written with `console.warn`; tests and
 * VMMs install their own handler.
 *
 * @module
 */

/**
 * A non-fatal problem: what happened, and the error behind it if any.
 *
 * @example
 * ```ts
 * import type { Warning } from "./warnings.ts";
 * import assert from "node:assert/strict";
 * const warning: Warning = { message: "failed to prefetch range", cause: new Error("EFAULT") };
 * assert.equal(warning.message, "failed to prefetch range");
 * ```
 */
export interface Warning {
  /** A lower-case sentence saying what failed. */
  readonly message: string;
  /** The underlying error, if any. */
  readonly cause?: unknown;
}

/**
 * Receives warnings.
 *
 * @example
 * ```ts
 * import { setWarningHandler, type WarningHandler } from "./warnings.ts";
 * const quiet: WarningHandler = () => {};
 * const previous = setWarningHandler(quiet);
 * setWarningHandler(previous);
 * ```
 */
export type WarningHandler = (warning: Warning) => void;

const defaultHandler: WarningHandler = (warning) => {
  const cause = warning.cause instanceof Error ? `: ${warning.cause.message}` : "";
  console.warn(`membacking: ${warning.message}${cause}`);
};

let handler: WarningHandler = defaultHandler;

/**
 * Installs `next` as the warning handler (`undefined` restores the default)
 * and returns the previous one.
 *
 * @example
 * ```ts
 * import { setWarningHandler } from "./warnings.ts";
 * const seen: string[] = [];
 * const previous = setWarningHandler((w) => seen.push(w.message));
 * setWarningHandler(previous);
 * ```
 */
export function setWarningHandler(
  next: ((warning: Warning) => void) | undefined,
): (warning: Warning) => void {
  const previous = handler;
  handler = next ?? defaultHandler;
  return previous;
}

/** Reports a warning to the current handler. */
export function warn(message: string, cause?: unknown): void {
  handler({ message, cause });
}
