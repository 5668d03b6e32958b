/**
 * Aligned text tables and optional ANSI colour for the demo's output.
 *
 * Colour is only used when standard output is a terminal and `NO_COLOR` is
 * not set (https://no-color.org); otherwise every style is the identity.
 *
 * @module
 */

/** The colours and weights the demo uses. */
export type Tone = "bold" | "dim" | "red" | "green" | "yellow" | "blue" | "magenta" | "cyan";

const CODES: Record<Tone, [number, number]> = {
  bold: [1, 22],
  dim: [2, 22],
  red: [31, 39],
  green: [32, 39],
  yellow: [33, 39],
  blue: [34, 39],
  magenta: [35, 39],
  cyan: [36, 39],
};

// deno-lint-ignore no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

/** The printed width of `text` (ANSI escapes take no room). */
export function visibleWidth(text: string): number {
  return [...text.replace(ANSI, "")].length;
}

/**
 * Applies {@linkcode Tone}s to text, or does nothing when colour is off.
 *
 * @example
 * ```ts
 * import { Style } from "./table.ts";
 * const style = new Style(false);
 * console.log(style.paint("plain", "red", "bold")); // "plain"
 * ```
 */
export class Style {
  /** Whether escapes are emitted. */
  readonly enabled: boolean;

  /** A style that colours when `enabled`. */
  constructor(enabled: boolean) {
    this.enabled = enabled;
  }

  /** Colour when stdout is a terminal and `NO_COLOR` is unset or empty. */
  static forStdout(): Style {
    const noColor = Deno.env.get("NO_COLOR");
    return new Style(Deno.stdout.isTerminal() && (noColor === undefined || noColor === ""));
  }

  /** `text` with `tones` applied (innermost last). */
  paint(text: string, ...tones: Tone[]): string {
    if (!this.enabled || text === "") return text;
    let out = text;
    for (const tone of tones.toReversed()) {
      const [on, off] = CODES[tone];
      out = `\x1b[${on}m${out}\x1b[${off}m`;
    }
    return out;
  }
}

/** One column of a {@linkcode renderTable} table. */
export interface Column {
  /** Header text. */
  readonly title: string;
  /** Alignment of the cells (default left). */
  readonly align?: "left" | "right";
}

/**
 * Renders rows as an aligned table: a bold header, a rule, the rows, each
 * line indented by `indent`. Cells may already contain colour escapes.
 *
 * @example
 * ```ts
 * import { renderTable, Style } from "./table.ts";
 * const text = renderTable(new Style(false), [{ title: "A" }, { title: "B", align: "right" }], [
 *   ["x", "1"],
 *   ["yy", "22"],
 * ]);
 * console.log(text);
 * ```
 */
export function renderTable(
  style: Style,
  columns: readonly Column[],
  rows: readonly (readonly string[])[],
  indent = "  ",
): string {
  const widths = columns.map((column, i) =>
    Math.max(visibleWidth(column.title), ...rows.map((row) => visibleWidth(row[i] ?? "")))
  );
  const pad = (text: string, i: number): string => {
    const gap = " ".repeat(widths[i] - visibleWidth(text));
    return columns[i].align === "right" ? gap + text : text + gap;
  };
  const line = (cells: readonly string[]): string =>
    (indent + cells.map((cell, i) => pad(cell, i)).join("  ")).trimEnd();
  const header = line(columns.map((c) => style.paint(c.title, "bold")));
  const rule = indent + style.paint(widths.map((w) => "─".repeat(w)).join("  "), "dim");
  return [header, rule, ...rows.map(line)].join("\n");
}
