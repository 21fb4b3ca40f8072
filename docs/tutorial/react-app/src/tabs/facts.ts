/**
 * The exported facts (scripts/export_tutorial_data.py writes ../data/; tests/test_tutorial_export.py fails when the
 * committed copy is stale). Everything the teaching tabs show about the model comes from here, not from literals.
 */
import raw from "../data/tutorial-data.json";

export type Flag = {
  flag: string; dest: string; default: unknown; type: string; choices: unknown[] | null; help: string; group: string;
  shared?: boolean; stage_default?: boolean;
};
export type TraceRow = { module: string; class: string; role: string; out_shape: number[]; kv_shape?: number[] };
export type Preset = {
  key: string; title: string;
  config: Record<string, number | boolean>;
  params: Record<string, number>;
  tied: boolean;
  state_dict_shapes: Record<string, number[]>;
  kv_cache_bytes_per_token_fp16: number;
  kv_cache_bytes_per_token_fp16_if_mha: number;
  forward_trace: { batch: number; seq: number; rows: TraceRow[] };
};
export type Stage = {
  stage: string; script: string; summary: string; description: string; save_weight: string; from_weight: string; output: string;
  defaults: Record<string, number>; flags: Flag[];
};
export type Facts = {
  presets: Preset[];
  stages: Stage[];
  lr: { peak: number; total: number; warmup: number; points: [number, number][] }[];
  rope: {
    theta: number;
    yarn: { factor: number; original_max_position_embeddings: number; beta_fast: number; beta_slow: number;
      attention_factor: number };
    per_head_dim: { head_dim: number; inv_freq: number[]; inv_freq_yarn: number[] }[];
    table_head_dim: number;
    table: { position: number; cos: number[]; sin: number[]; cos_yarn: number[]; sin_yarn: number[] }[];
    relative_dot: { m: number; n: number; dot: number }[];
  };
  tiny: {
    config: Record<string, number>; params: number; seed: number; train_steps: number; train_data: string;
    loss_first_last: number[]; sentence: string; ids: number[]; tokens: string[];
    tied_same_tensor: boolean; state_dict_has_both: boolean;
    embedding_rows: { id: number; token: string; first8: number[] }[];
    next_token_top5: { id: number; token: string; prob: number }[];
    attention: { layer: number; n_heads: number; n_kv_heads: number; head_dim: number;
      kv_head_of_query_head: number[]; probs: number[][][]; max_abs_diff_vs_module: number };
    kv_cache: { step: number; input_tokens: number; cache_length: number; layer0_keys_shape: number[];
      next_id: number }[];
    moe: { layer: number; n_routed_experts: number; top_k: number; n_shared_experts: number; aux_loss_alpha: number;
      seq_aux: boolean; scores: number[][]; experts: number[][]; weights: number[][]; expert_counts: number[];
      aux_loss: number };
  };
  tokenizer: {
    vocab_size: number; bos: string; eos: string; pad: string;
    added_tokens: { id: number; content: string; special: boolean }[];
    parity: { text: string; ids: number[]; tokens: string[] }[];
    chat: { name: string; messages: Record<string, unknown>[]; tools?: unknown[]; add_generation_prompt: boolean;
      enable_thinking?: boolean; rendered: string; ids: number[]; tokens: string[] }[];
  };
  sft_examples: { source: string; line: number; max_length: number; ids: number[]; tokens: string[];
    trained: boolean[] }[];
  deployment: { commands: { target: string; command: string; checked: string }[];
    script_flags: Record<string, Flag[]> };
  ascend: {
    dockerfile_path: string; dockerfile: string; dockerfile_args: Record<string, string>;
    dockerfile_env: Record<string, string>; run_all_help: string; all_stages: string[];
    options: { option: string; help: string }[]; presets: Record<string, string[]>; demo_dry_run: string[];
  };
};

export const facts = raw as unknown as Facts;

export function preset(key: string): Preset {
  const p = facts.presets.find((x) => x.key === key);
  if (!p) throw new Error(`unknown preset ${key}`);
  return p;
}

/** 25829888 -> "25.83M", as MiniMind reports sizes. */
export function millions(n: number): string {
  return `${(n / 1e6).toFixed(2)}M`;
}

export function bytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(2)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

export function shape(s: number[]): string {
  return `[${s.join(", ")}]`;
}
