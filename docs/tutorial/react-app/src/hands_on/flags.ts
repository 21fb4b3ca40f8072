/** The stage flag form: the manager describes each flag (from the trainer's own parser); this turns what the user
 * typed into the JSON the manager validates again. Only flags the user changed are sent, so every other flag keeps
 * the trainer's default (per-device defaults included). Each error belongs to one field, so the form shows it
 * next to that field and it goes away as soon as the field is fixed. */
import bounds from "../data/flag-bounds.json";

/** The trainer's limits (trainer/trainer_utils.py MINIMUM_FLAG_VALUES / MAXIMUM_FLAG_VALUES, exported by
 * scripts/export_tutorial_data.py): the manager refuses a value outside them, so the form says so first. */
export const FLAG_BOUNDS: { min: Record<string, number>; max: Record<string, number> } = bounds;

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
  min?: number | null; // a manager that sends bounds overrides FLAG_BOUNDS
  max?: number | null;
};

export type StageInfo = { name: string; script: string; description: string; flags: FlagInfo[] };

/** 1099511627776 -> "2^40": the trainer's "practically unbounded" limits are powers of two too long to read. */
export function boundText(n: number): string {
  const k = Math.log2(n);
  return n >= 1 << 20 && Number.isInteger(k) ? `2^${k}` : String(n);
}

export function flagBounds(flag: FlagInfo): { min?: number; max?: number } {
  const min = flag.min ?? FLAG_BOUNDS.min[flag.dest] ?? FLAG_BOUNDS.min[flag.name];
  const max = flag.max ?? FLAG_BOUNDS.max[flag.dest] ?? FLAG_BOUNDS.max[flag.name];
  return { ...(min !== undefined ? { min } : {}), ...(max !== undefined ? { max } : {}) };
}

/** One field's text -> the JSON value, or an error message for the form. Empty text = use the default; text made
 * of spaces only is an error (it looks filled in, but would silently run with the default). */
export function parseFlagValue(flag: FlagInfo, text: string): { value?: string | number; error?: string } {
  const t = text.trim();
  if (text === "") return {};
  if (t === "") return { error: `--${flag.name}: only spaces; clear the field to use the default (${defaultText(flag) || "none"})` };
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
  if (typeof value === "number" && !flag.choices) {
    const { min, max } = flagBounds(flag);
    if (min !== undefined && value < min) return { error: `--${flag.name}: at least ${min}` };
    if (max !== undefined && value > max) return { error: `--${flag.name}: at most ${boundText(max)} (the manager refuses more)` };
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
  fieldErrors: Record<string, string>;
} {
  const flags: Record<string, string | number> = {};
  const errors: string[] = [];
  const fieldErrors: Record<string, string> = {};
  for (const f of stage.flags) {
    if (f.kind === "refused" || f.alias_of) continue;
    const text = edits[f.name];
    if (text === undefined) continue;
    const { value, error } = parseFlagValue(f, text);
    if (error) {
      errors.push(error);
      fieldErrors[f.name] = error;
    } else if (value !== undefined && String(value) !== String(f.default)) flags[f.name] = value;
  }
  return { flags, errors, fieldErrors };
}

/** The data file a run would read: the typed --data_path, else the stage's default (null = the trainer picks). */
export function effectiveDataPath(stage: StageInfo, edits: Record<string, string>): string | null {
  const f = stage.flags.find((x) => x.name === "data_path");
  if (!f) return null;
  const typed = (edits[f.name] ?? "").trim();
  if (typed) return typed;
  return typeof f.default === "string" && f.default ? f.default : null;
}

/** An error for --data_path when the manager's dataset list (GET /api/datasets) does not have that file: the
 * trainer would only fail after loading the model, about 30 s later. */
export function dataPathError(path: string | null, datasets: { path: string }[]): string | null {
  if (path === null) return null;
  const norm = (p: string) => p.replace(/^\.\//, "");
  if (datasets.some((d) => norm(d.path) === norm(path))) return null;
  // the list holds every dataset/*.jsonl and dataset/demo/*.jsonl; deeper folders are left to the manager's check
  if (!/^dataset\/(demo\/)?[^/]+$/.test(norm(path))) return null;
  const known = datasets.map((d) => d.path).slice(0, 5).join(", ");
  return `--data_path: ${path} is not in the manager's dataset list (${known || "dataset/ is empty"}); ` +
    "put the JSONL file under dataset/ or pick one from the Datasets table";
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
