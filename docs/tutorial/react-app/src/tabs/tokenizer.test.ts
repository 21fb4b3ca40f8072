import { describe, expect, it } from "vitest";
import { facts } from "./facts";
import { decode, encode, pieces, renderChat } from "./tokenizer";

describe("browser tokenizer = Python tokenizer (cases exported by scripts/export_tutorial_data.py)", () => {
  it.each(facts.tokenizer.parity.map((c) => [JSON.stringify(c.text), c] as const))("%s", (_name, c) => {
    const got = encode(c.text);
    expect(got.ids).toEqual(c.ids);
    expect(got.tokens).toEqual(c.tokens);
    expect(decode(got.ids)).toBe(c.text);
  });

  it.each(facts.tokenizer.chat.map((c) => [c.name, c] as const))("chat template: %s", (_name, c) => {
    const text = renderChat(c.messages, {
      tools: c.tools, add_generation_prompt: c.add_generation_prompt, enable_thinking: c.enable_thinking,
    });
    expect(text).toBe(c.rendered);
    expect(encode(text).ids).toEqual(c.ids);
  });

  it("tags are single ids; 你好 is what the real vocabulary gives", () => {
    for (const t of facts.tokenizer.added_tokens) expect(encode(t.content).ids).toEqual([t.id]);
    const p = pieces("你好");
    expect(p.map((x) => x.id)).toEqual(facts.tokenizer.parity[0].ids);
    expect(p.map((x) => x.text).join("")).toBe("你好");
  });
});
