/**
 * The project's real tokenizer in the browser: model/tokenizer.json and tokenizer_config.json (byte copies in
 * ../data/, refreshed by scripts/export_tutorial_data.py) loaded by @huggingface/tokenizers, and the chat template
 * rendered by @huggingface/jinja, the same libraries transformers.js uses. Both are bundled; nothing is fetched.
 * tokenizer.test.ts checks ids and pieces against the Python tokenizer's on the exported parity cases.
 */
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import tokenizerJson from "../data/tokenizer.json";
import tokenizerConfig from "../data/tokenizer_config.json";

let cached: Tokenizer | null = null;
let template: Template | null = null;

export function tokenizer(): Tokenizer {
  cached ??= new Tokenizer(tokenizerJson as object, tokenizerConfig as object);
  return cached;
}

export type Piece = { id: number; token: string; text: string };

/** ids and byte-level pieces like Python's tokenizer(text, add_special_tokens=False). */
export function encode(text: string): { ids: number[]; tokens: string[] } {
  const enc = tokenizer().encode(text, { add_special_tokens: false });
  return { ids: enc.ids, tokens: enc.tokens };
}

/** Each id with its byte-level token and its decoded text (a lone part of a multi-byte character shows as U+FFFD). */
export function pieces(text: string): Piece[] {
  const { ids, tokens } = encode(text);
  return ids.map((id, i) => ({ id, token: tokens[i], text: decode([id]) }));
}

export function decode(ids: number[]): string {
  return tokenizer().decode(ids, { skip_special_tokens: false });
}

export type ChatOptions = { tools?: unknown[]; add_generation_prompt?: boolean; enable_thinking?: boolean };

/** tokenizer_config.json's chat_template rendered like transformers' apply_chat_template(tokenize=False). */
export function renderChat(messages: Record<string, unknown>[], opts: ChatOptions = {}): string {
  template ??= new Template((tokenizerConfig as { chat_template: string }).chat_template);
  const ctx: Record<string, unknown> = {
    messages,
    add_generation_prompt: opts.add_generation_prompt ?? false,
    bos_token: (tokenizerConfig as { bos_token: string }).bos_token,
    eos_token: (tokenizerConfig as { eos_token: string }).eos_token,
  };
  if (opts.tools) ctx.tools = opts.tools;
  if (opts.enable_thinking !== undefined) ctx.enable_thinking = opts.enable_thinking;
  return template.render(ctx);
}
