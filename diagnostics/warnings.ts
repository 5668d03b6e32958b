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
 * Installs `next` as the warning handler (`undefined` restores the default,
 * which writes `membacking: {message}: {cause's message}` with
 * `console.warn`) and returns the previous one. A warning is a non-fatal
 * problem: `message`, a lower-case sentence saying what failed, and
 * `cause`, the error behind it if any (DMA target failures, best-effort
 * prefetch, THP advice refused, a Worker that does not leave a grace period).
 *
 * @param next The new handler, or `undefined` for the default one.
 * @returns The handler it replaces.
 * @example
 * ```ts
 * import { setWarningHandler } from "../mod.ts";
 * import assert from "node:assert/strict";
 *
 * const seen: string[] = [];
 * const previous = setWarningHandler((w) => void seen.push(`${w.message} (${w.cause})`));
 * const mine = setWarningHandler(previous); // the default again; ours comes back
 * mine({ message: "a test warning", cause: new Error("EFAULT") });
 * assert.deepEqual(seen, ["a test warning (Error: EFAULT)"]);
 * ```
 */
export function setWarningHandler(
  next: ((warning: { readonly message: string; readonly cause?: unknown }) => void) | undefined,
): (warning: { readonly message: string; readonly cause?: unknown }) => void {
  const previous = handler;
  handler = next ?? defaultHandler;
  return previous;
}

/** Reports a warning to the current handler. */
export function warn(message: string, cause?: unknown): void {
  handler({ message, cause });
}
