import { describe, expect, it } from "vitest";
import { boundText, buildFlags, dataPathError, defaultText, groupFlags, parseFlagValue, type FlagInfo, type StageInfo } from "./flags";

const f = (over: Partial<FlagInfo>): FlagInfo => ({
  name: "x", dest: "x", type: "str", default: null, choices: null, help: "", group: "g", kind: "value",
  alias_of: null, roots: null, refused_reason: null, ...over,
});

const stage: StageInfo = {
  name: "pretrain", script: "trainer/train_pretrain.py", description: "",
  flags: [
    f({ name: "learning_rate", dest: "learning_rate", type: "float", default: 5e-4, group: "optimisation" }),
    f({ name: "batch_size", dest: "batch_size", type: "int", default: 32, per_device: { cuda: 128 }, group: "optimisation" }),
    f({ name: "use_moe", dest: "use_moe", type: "int", default: 0, choices: [0, 1], group: "model" }),
    f({ name: "save_dir", dest: "save_dir", default: "out", kind: "path", roots: ["out"], group: "weights" }),
    f({ name: "student_hidden_size", dest: "hidden_size", type: "int", alias_of: "hidden_size", group: "this stage" }),
    f({ name: "trust_remote_code", dest: "trust_remote_code", type: "int", default: 0, kind: "refused", refused_reason: "no" }),
  ],
};

describe("flag form", () => {
  it("types values and sends only what differs from the default", () => {
    const { flags, errors } = buildFlags(stage, { learning_rate: "1e-3", batch_size: "32", use_moe: "1", save_dir: " out/run1 " });
    expect(errors).toEqual([]);
    expect(flags).toEqual({ learning_rate: 0.001, use_moe: 1, save_dir: "out/run1" });
  });

  it("names each bad field", () => {
    const { flags, errors } = buildFlags(stage, { batch_size: "4.5", learning_rate: "fast", use_moe: "2", save_dir: "../etc" });
    expect(flags).toEqual({});
    expect(errors).toEqual([
      "--learning_rate: a number such as 5e-4", "--batch_size: an integer", "--use_moe: one of 0, 1",
      "--save_dir: a path inside out/ (relative, no ..)",
    ]);
    expect(parseFlagValue(stage.flags[3], "/tmp/x").error).toContain("out/");
  });

  it("never sends refused flags or aliases, and shows per-device defaults", () => {
    expect(buildFlags(stage, { trust_remote_code: "1", student_hidden_size: "64" }).flags).toEqual({});
    expect(groupFlags(stage).flatMap(([, fs]) => fs.map((x) => x.name))).not.toContain("student_hidden_size");
    expect(defaultText(stage.flags[1])).toBe("32 (cuda: 128)");
  });
});

describe("checks before sending", () => {
  it("a field of spaces is an error, not a silent default", () => {
    const { flags, fieldErrors } = buildFlags(stage, { batch_size: "  ", learning_rate: " 1e-3 " });
    expect(flags).toEqual({ learning_rate: 0.001 });
    expect(fieldErrors.batch_size).toMatch(/only spaces; clear the field to use the default \(32 \(cuda: 128\)\)/);
  });

  it("numbers past the trainer's bounds are refused at the field", () => {
    expect(parseFlagValue(stage.flags[1], "0").error).toBe("--batch_size: at least 1");
    expect(parseFlagValue(stage.flags[1], "65537").error).toBe("--batch_size: at most 65536 (the manager refuses more)");
    expect(parseFlagValue(stage.flags[1], "65536").value).toBe(65536);
    expect(parseFlagValue({ ...stage.flags[1], max: 8 }, "9").error).toContain("at most 8"); // the manager's own bound wins
    expect(boundText(2 ** 40)).toBe("2^40");
    expect(boundText(65536)).toBe("65536");
  });

  it("a data file missing from dataset/ is caught before the run, deeper folders are left to the manager", () => {
    const listed = [{ path: "dataset/pretrain_hq.jsonl" }, { path: "dataset/demo/pretrain_demo.jsonl" }];
    expect(dataPathError("dataset/pretrain_hq.jsonl", listed)).toBeNull();
    expect(dataPathError("./dataset/demo/pretrain_demo.jsonl", listed)).toBeNull();
    expect(dataPathError("dataset/pretrian_hq.jsonl", listed)).toMatch(/not in the manager's dataset list/);
    expect(dataPathError("dataset/mine/part1.jsonl", listed)).toBeNull();
    expect(dataPathError(null, listed)).toBeNull();
  });
});
