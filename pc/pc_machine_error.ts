/**
 * The error of the PC machine.
 *
 * @module
 */

/**
 * The machine could not go on; `kind` says why (`detail` holds the values
 * its message shows):
 *
 * - `internalError`: `KVM_EXIT_INTERNAL_ERROR suberror {suberror} (data
 *   {data}) at {cs}:{rip}`
 * - `unexpectedExit`: `unexpected exit {name}`
 */
export class PcMachineError extends Error {
  /** Why the machine stopped. */
  readonly kind: PcMachineError["detail"]["kind"];
  /** The case, with its values. */
  readonly detail:
    | {
      readonly kind: "internalError";
      readonly suberror: number;
      readonly data: readonly bigint[];
      readonly cs: number;
      readonly rip: bigint;
    }
    | { readonly kind: "unexpectedExit"; readonly name: string };

  /**
   * Creates the error for `detail`.
   *
   * @param detail The case and its values.
   */
  constructor(detail: PcMachineError["detail"]) {
    super(describe(detail));
    this.name = "PcMachineError";
    this.kind = detail.kind;
    this.detail = detail;
  }
}

function describe(d: PcMachineError["detail"]): string {
  switch (d.kind) {
    case "internalError":
      return `KVM_EXIT_INTERNAL_ERROR suberror ${d.suberror} (data ${
        d.data.map((x) => `0x${x.toString(16)}`).join(" ")
      }) at ${d.cs.toString(16)}:${d.rip.toString(16)}`;
    case "unexpectedExit":
      return `unexpected exit ${d.name}`;
  }
}
