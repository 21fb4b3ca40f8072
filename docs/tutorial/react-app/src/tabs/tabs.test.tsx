import { Suspense } from "react";
import type React from "react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { teachingTabs } from "./index";
import { facts, millions } from "./facts";
import { encode } from "./tokenizer";

afterEach(cleanup);

/** Tabs are lazy chunks: render one inside Suspense and wait until it has replaced the fallback. */
async function renderTab(C: React.ComponentType) {
  const r = render(<Suspense fallback={<p>loading</p>}><C /></Suspense>);
  await waitFor(() => expect(r.container.textContent!.length).toBeGreaterThan(100), { timeout: 10000 });
  return r;
}

describe("teaching tabs", () => {
  it.each(teachingTabs.map((t) => [t.id, t] as const))("%s renders without console errors", async (_id, t) => {
    const errors = vi.spyOn(console, "error").mockImplementation(() => {});
    const C = t.component;
    await renderTab(C);
    expect(errors).not.toHaveBeenCalled();
    errors.mockRestore();
  });

  it("architecture shows the exported parameter counts and switches presets", async () => {
    const C = teachingTabs.find((t) => t.id === "architecture")!.component;
    await renderTab(C);
    expect(screen.getAllByText(/25\.83M/).length).toBeGreaterThan(0);
    fireEvent.change(screen.getByLabelText("preset"), { target: { value: "moe" } });
    expect(screen.getAllByText(new RegExp(millions(facts.presets[2].params.total).replace(".", "\\."))).length).toBeGreaterThan(0);
  });

  it("tokenization tab shows the real ids of typed text, and the chat template", async () => {
    const C = teachingTabs.find((t) => t.id === "tokenization")!.component;
    await renderTab(C);
    const box = screen.getByLabelText("text to tokenize");
    fireEvent.change(box, { target: { value: "你好<think>" } });
    expect(screen.getByText(`ids: ${JSON.stringify(encode("你好<think>").ids)}`)).toBeTruthy();
    fireEvent.click(screen.getByLabelText(/apply_chat_template/));
    expect(screen.getByText(/ids: \[1,/)).toBeTruthy(); // <|im_start|> opens the templated text
  });

  it("model text is rendered as text, never as HTML", async () => {
    const C = teachingTabs.find((t) => t.id === "tokenization")!.component;
    const { container } = await renderTab(C);
    fireEvent.change(screen.getByLabelText("text to tokenize"), { target: { value: "<img src=x onerror=alert(1)>" } });
    expect(container.querySelector("img")).toBeNull();
  });
});

describe("teaching content matches the code", () => {
  it("the LoRA stage card names the adapter folder under out/lora/, not a pretrain weight", async () => {
    const C = teachingTabs.find((t) => t.id === "pipeline")!.component;
    await renderTab(C);
    fireEvent.click(screen.getByRole("button", { name: /→ lora$/ }));
    expect(screen.getByTestId("stage-output").textContent).toMatch(/^out\/lora\/lora_identity_\d+\/$/);
    fireEvent.click(screen.getByRole("button", { name: /^pretrain$/ }));
    expect(screen.getByTestId("stage-output").textContent).toMatch(/^out\/pretrain_\d+\.pth$/);
  });

  it("the attention tab gives MiniMind's heads and the demo model's heads separately", async () => {
    const C = teachingTabs.find((t) => t.id === "attention")!.component;
    await renderTab(C);
    const intro = screen.getByTestId("attention-intro").textContent!;
    const small = facts.presets[0].config;
    expect(intro).toContain(`${small.num_attention_heads} 个查询头、${small.num_key_value_heads} 个 KV 头`);
    expect(intro).toContain(`演示小模型`);
    expect(intro.indexOf("演示小模型")).toBeLessThan(intro.indexOf(`${facts.tiny.attention.n_heads} 个查询头、${facts.tiny.attention.n_kv_heads} 个 KV 头`));
  });
});
