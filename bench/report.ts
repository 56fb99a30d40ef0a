/**
 * The benchmark's table: one row per figure, prhelperd next to
 * qemu-pr-helper, their ratio, the goal from issue 9 and whether it is met.
 *
 * @module
 */

/** How a row's goal is judged. */
export type Goal =
  | { kind: "none" }
  /** prhelperd / qemu-pr-helper must be at least this. */
  | { kind: "ratioAtLeast"; value: number }
  /** prhelperd / qemu-pr-helper must be at most this. */
  | { kind: "ratioAtMost"; value: number }
  /** prhelperd's own figure must be at most this. */
  | { kind: "absAtMost"; value: number; unit: string }
  /** growth (prhelperd's figure) at most `fraction` of `base`. */
  | { kind: "flat"; base: number | null; fraction: number };

/** One line of the table. */
export interface Row {
  metric: string;
  prhelperd: number | null;
  qemu: number | null;
  /** The do-nothing floor server, where it applies. */
  floor?: number | null;
  goal: Goal;
  /** Decimal places for the figures. */
  digits: number;
}

/** prhelperd / qemu-pr-helper, or null. */
export function ratio(row: Row): number | null {
  if (row.prhelperd === null || row.qemu === null || row.qemu === 0) return null;
  return row.prhelperd / row.qemu;
}

function goalText(g: Goal): string {
  switch (g.kind) {
    case "none":
      return "-";
    case "ratioAtLeast":
      return `>= ${g.value.toFixed(2)}x`;
    case "ratioAtMost":
      return `<= ${g.value.toFixed(2)}x`;
    case "absAtMost":
      return `<= ${g.value} ${g.unit}`;
    case "flat":
      return `flat (<= ${Math.round(g.fraction * 100)}%)`;
  }
}

/** "yes", "NO", or "-" when there is no goal or a figure is missing. */
export function verdict(row: Row): string {
  const g = row.goal;
  const r = ratio(row);
  const p = row.prhelperd;
  switch (g.kind) {
    case "none":
      return "-";
    case "ratioAtLeast":
      return r === null ? "n/a" : r >= g.value ? "yes" : "NO";
    case "ratioAtMost":
      return r === null ? "n/a" : r <= g.value ? "yes" : "NO";
    case "absAtMost":
      return p === null ? "n/a" : p <= g.value ? "yes" : "NO";
    case "flat":
      return p === null || g.base === null ? "n/a" : p <= g.base * g.fraction ? "yes" : "NO";
  }
}

function fmt(v: number | null | undefined, digits: number): string {
  return v === null || v === undefined || !Number.isFinite(v) ? "n/a" : v.toFixed(digits);
}

/** Options of {@linkcode formatTable}. */
export interface TableOptions {
  /** Headers of the two figure columns (default prhelperd, qemu-pr-helper). */
  columns?: [string, string];
}

/** The table as text (fixed-width columns, `|`-separated, Markdown-compatible). */
export function formatTable(rows: Row[], options: TableOptions = {}): string {
  const [a, b] = options.columns ?? ["prhelperd", "qemu-pr-helper"];
  const head = ["metric", a, b, "ratio", "goal", "met", "floor"];
  const body = rows.map((row) => {
    const r = ratio(row);
    return [
      row.metric,
      fmt(row.prhelperd, row.digits),
      fmt(row.qemu, row.digits),
      r === null ? "n/a" : `${r.toFixed(2)}x`,
      goalText(row.goal),
      verdict(row),
      row.floor === undefined ? "-" : fmt(row.floor, row.digits),
    ];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) =>
    "| " + cells.map((c, i) => i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])).join(" | ") +
    " |";
  const sep = "|" + widths.map((w, i) => i === 0 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":")
    .join("|") +
    "|";
  return [line(head), sep, ...body.map(line)].join("\n");
}
