import { afterEach, describe, expect, it, vi } from "vitest";
import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { teachingTabs } from "./index";
import { facts, millions } from "./facts";
import { encode } from "./tokenizer";

afterEach(cleanup);

describe("teaching tabs", () => {
  it.each(teachingTabs.map((t) => [t.id, t] as const))("%s renders without console errors", (_id, t) => {
    const errors = vi.spyOn(console, "error").mockImplementation(() => {});
    const C = t.component;
    const { container } = render(<C />);
    expect(container.textContent!.length).toBeGreaterThan(100);
    expect(errors).not.toHaveBeenCalled();
    errors.mockRestore();
  });

  it("architecture shows the exported parameter counts and switches presets", () => {
    const C = teachingTabs.find((t) => t.id === "architecture")!.component;
    render(<C />);
    expect(screen.getAllByText(/25\.83M/).length).toBeGreaterThan(0);
    fireEvent.change(screen.getByLabelText("preset"), { target: { value: "moe" } });
    expect(screen.getAllByText(new RegExp(millions(facts.presets[2].params.total).replace(".", "\\."))).length).toBeGreaterThan(0);
  });

  it("tokenization tab shows the real ids of typed text, and the chat template", () => {
    const C = teachingTabs.find((t) => t.id === "tokenization")!.component;
    render(<C />);
    const box = screen.getByLabelText("text to tokenize");
    fireEvent.change(box, { target: { value: "你好<think>" } });
    expect(screen.getByText(`ids: ${JSON.stringify(encode("你好<think>").ids)}`)).toBeTruthy();
    fireEvent.click(screen.getByLabelText(/apply_chat_template/));
    expect(screen.getByText(/ids: \[1,/)).toBeTruthy(); // <|im_start|> opens the templated text
  });

  it("model text is rendered as text, never as HTML", () => {
    const C = teachingTabs.find((t) => t.id === "tokenization")!.component;
    const { container } = render(<C />);
    fireEvent.change(screen.getByLabelText("text to tokenize"), { target: { value: "<img src=x onerror=alert(1)>" } });
    expect(container.querySelector("img")).toBeNull();
  });
});
