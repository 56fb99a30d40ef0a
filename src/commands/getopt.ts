/**
 * The operator tools' command-line parser: a table of options, each spec
 * carrying the handler that applies it to the tool's state. The rules of a
 * table say which getopt_long forms it accepts (bundled short options,
 * abbreviated long names, `_` for `-`); `--opt=VALUE` and `--opt VALUE`, a
 * lone `-` as an operand and `--` ending the options are always accepted.
 * Pure: errors come back as values, for the tool to word as it words them.
 *
 * @module
 */

/** What a handler says: nothing (go on), an error message, or stop here. */
export type HandlerResult = void | { error: string } | { stop: true };

/** One option of a table and what it does. */
export interface OptionSpec<S> {
  /** One-letter short form (`-k`), if any. */
  short?: string;
  /** Long forms without the leading `--`; the first is the option's name. */
  long: readonly string[];
  /** Whether it takes a value. */
  value: boolean;
  /** Without a value of its own: `--name=VALUE` is taken, the value dropped, not refused. */
  dropsValue?: boolean;
  /** Apply the option to `state`; `name` is the option as written, `value` "" without one. */
  handle(state: S, value: string, name: string): HandlerResult;
}

/** The getopt_long forms a table accepts beyond the exact ones. */
export interface GetoptRules {
  /** `-abc` is `-a -b -c`, and `-kVALUE` gives `-k` its value. */
  bundling: boolean;
  /** A unique prefix of a long name stands for it (`--report-cap`). */
  abbreviations: boolean;
  /** `_` in a long name reads as `-` (`--param_rk`). */
  underscores: boolean;
  /**
   * The whole line is checked before any handler runs, so a malformed option
   * anywhere is the error (getopt's way); otherwise options act in order and
   * the first problem, of either kind, is the one reported.
   */
  syntaxFirst: boolean;
}

/** A malformed command line, by kind; `arg` is the argument as written. */
export type GetoptError =
  | { kind: "unknown"; arg: string }
  | { kind: "ambiguous"; arg: string }
  | { kind: "needs-value"; arg: string; name: string }
  | { kind: "no-value-allowed"; arg: string; name: string }
  | { kind: "unknown-short"; arg: string; letter: string }
  | { kind: "short-needs-value"; arg: string; letter: string };

/** The outcome of {@linkcode getopt}. */
export type GetoptResult =
  | { kind: "done"; operands: string[] }
  | { kind: "stopped"; operands: string[] }
  | { kind: "syntax"; error: GetoptError }
  | { kind: "error"; message: string };

interface Found<S> {
  spec: OptionSpec<S>;
  value: string;
  name: string;
}

/** The command line being read, with its table and rules. */
interface Line<S> {
  args: readonly string[];
  specs: readonly OptionSpec<S>[];
  rules: GetoptRules;
}

type Step<S> = { found: Found<S>[]; operands: string[]; next: number } | { error: GetoptError };

function longOption<S>(line: Line<S>, i: number): Step<S> {
  const { args, specs, rules } = line;
  const a = args[i];
  const eq = a.indexOf("=");
  const written = eq < 0 ? a : a.slice(0, eq);
  let name = written.slice(2);
  if (rules.underscores) name = name.replaceAll("_", "-");
  const exact = specs.filter((s) => s.long.includes(name));
  const matches = exact.length > 0 || !rules.abbreviations
    ? exact
    : specs.filter((s) => s.long.some((l) => l.startsWith(name)));
  if (name === "" || matches.length === 0) return { error: { kind: "unknown", arg: a } };
  if (new Set(matches).size > 1) return { error: { kind: "ambiguous", arg: a } };
  const spec = matches[0];
  if (!spec.value && eq >= 0 && !spec.dropsValue) {
    return { error: { kind: "no-value-allowed", arg: a, name: written } };
  }
  const inline = spec.value && eq >= 0 ? { value: a.slice(eq + 1), name: written } : undefined;
  return wholeArgument(spec, args, { i, inline });
}

/** An option that is all of `args[i]`: no value, its `inline` one, or the next argument. */
function wholeArgument<S>(
  spec: OptionSpec<S>,
  args: readonly string[],
  at: { i: number; inline?: { value: string; name: string } },
): Step<S> {
  const { i, inline } = at;
  const a = args[i];
  const one = (value: string, name: string, next: number): Step<S> => ({
    found: [{ spec, value, name }],
    operands: [],
    next,
  });
  if (!spec.value) return one("", a, i + 1);
  if (inline !== undefined) return one(inline.value, inline.name, i + 1);
  if (i + 1 < args.length) return one(args[i + 1], a, i + 2);
  return { error: { kind: "needs-value", arg: a, name: a } };
}

function shortOptions<S>(line: Line<S>, i: number): Step<S> {
  const { args, specs, rules } = line;
  const a = args[i];
  if (!rules.bundling) {
    const spec = a.length === 2 ? specs.find((s) => s.short === a[1]) : undefined;
    if (spec === undefined) return { error: { kind: "unknown", arg: a } };
    return wholeArgument(spec, args, { i });
  }
  const found: Found<S>[] = [];
  for (let j = 1; j < a.length; j++) {
    const spec = specs.find((s) => s.short === a[j]);
    if (spec === undefined) return { error: { kind: "unknown-short", arg: a, letter: a[j] } };
    const name = `-${a[j]}`;
    if (!spec.value) {
      found.push({ spec, value: "", name });
      continue;
    }
    if (j + 1 < a.length) found.push({ spec, value: a.slice(j + 1), name });
    else if (i + 1 < args.length) {
      return { found: [...found, { spec, value: args[i + 1], name }], operands: [], next: i + 2 };
    } else return { error: { kind: "short-needs-value", arg: a, letter: a[j] } };
    break;
  }
  return { found, operands: [], next: i + 1 };
}

function step<S>(line: Line<S>, i: number): Step<S> {
  const args = line.args;
  const a = args[i];
  if (a === "--") return { found: [], operands: args.slice(i + 1), next: args.length };
  if (a.startsWith("--")) return longOption(line, i);
  if (a.startsWith("-") && a.length > 1) return shortOptions(line, i);
  return { found: [], operands: [a], next: i + 1 };
}

/**
 * Parse `args` against `specs` (options and operands may mix, as GNU
 * getopt_long allows), calling each option's handler on `state` in order.
 * Returns the operands, or the first syntax error or handler error; a handler
 * that stops ends the parse there (`stopped`).
 */
export function getopt<S>(
  args: readonly string[],
  specs: readonly OptionSpec<S>[],
  options: { state: S; rules: GetoptRules },
): GetoptResult {
  const { state, rules } = options;
  const steps: { found: Found<S>[]; operands: string[] }[] = [];
  let syntax: GetoptError | null = null;
  for (let i = 0; i < args.length;) {
    const s = step({ args, specs, rules }, i);
    if ("error" in s) {
      syntax = s.error;
      break;
    }
    steps.push(s);
    i = s.next;
  }
  if (syntax !== null && rules.syntaxFirst) return { kind: "syntax", error: syntax };
  const operands: string[] = [];
  for (const s of steps) {
    for (const f of s.found) {
      const r = f.spec.handle(state, f.value, f.name);
      if (r === undefined) continue;
      if ("error" in r) return { kind: "error", message: r.error };
      return { kind: "stopped", operands };
    }
    operands.push(...s.operands);
  }
  if (syntax !== null) return { kind: "syntax", error: syntax };
  return { kind: "done", operands };
}
