/** The stage flag form: the manager describes each flag (from the trainer's own parser); this turns what the user
 * typed into the JSON the manager validates again. Only flags the user changed are sent, so every other flag keeps
 * the trainer's default (per-device defaults included). */

export type FlagInfo = {
  name: string;
  dest: string;
  type: "int" | "float" | "str";
  default: unknown;
  choices: (string | number)[] | null;
  help: string;
  group: string;
  kind: "value" | "path" | "name" | "refused";
  alias_of: string | null;
  roots: string[] | null;
  refused_reason: string | null;
  per_device?: Record<string, unknown> | null;
};

export type StageInfo = { name: string; script: string; description: string; flags: FlagInfo[] };

/** One field's text -> the JSON value, or an error message for the form. Empty text = use the default. */
export function parseFlagValue(flag: FlagInfo, text: string): { value?: string | number; error?: string } {
  const t = text.trim();
  if (t === "") return {};
  let value: string | number = t;
  if (flag.type === "int") {
    if (!/^[+-]?\d+$/.test(t)) return { error: `--${flag.name}: an integer` };
    value = Number.parseInt(t, 10);
  } else if (flag.type === "float") {
    const v = Number(t);
    if (!Number.isFinite(v) || !/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) {
      return { error: `--${flag.name}: a number such as 5e-4` };
    }
    value = v;
  }
  if (flag.choices && !flag.choices.some((c) => c === value || String(c) === String(value))) {
    return { error: `--${flag.name}: one of ${flag.choices.join(", ")}` };
  }
  if (flag.kind === "path" && flag.roots && /^(\/|~)|(^|\/)\.\.(\/|$)/.test(t)) {
    return { error: `--${flag.name}: a path inside ${flag.roots.map((r) => r + "/").join(" ")} (relative, no ..)` };
  }
  return { value };
}

/** The user's edits -> {flags, errors}. Values equal to the default are left out. Aliases (e.g. distillation's
 * --student_hidden_size) and refused flags are never sent from the form. */
export function buildFlags(stage: StageInfo, edits: Record<string, string>): {
  flags: Record<string, string | number>;
  errors: string[];
} {
  const flags: Record<string, string | number> = {};
  const errors: string[] = [];
  for (const f of stage.flags) {
    if (f.kind === "refused" || f.alias_of) continue;
    const text = edits[f.name];
    if (text === undefined) continue;
    const { value, error } = parseFlagValue(f, text);
    if (error) errors.push(error);
    else if (value !== undefined && String(value) !== String(f.default)) flags[f.name] = value;
  }
  return { flags, errors };
}

/** The stage's flags by group, in parser order, without aliases (shown by their main name). */
export function groupFlags(stage: StageInfo): [string, FlagInfo[]][] {
  const groups = new Map<string, FlagInfo[]>();
  for (const f of stage.flags) {
    if (f.alias_of) continue;
    const g = f.group || "";
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g)!.push(f);
  }
  return [...groups.entries()];
}

export function defaultText(f: FlagInfo): string {
  const base = f.default === null || f.default === undefined ? "" : String(f.default);
  const dev = f.per_device ? Object.entries(f.per_device).map(([k, v]) => `${k}: ${v}`).join(", ") : "";
  return dev ? `${base} (${dev})` : base;
}
