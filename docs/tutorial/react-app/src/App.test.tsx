import css from "./styles.css?raw";
import { afterEach, describe, expect, it } from "vitest";
import { render, screen, fireEvent, cleanup, waitFor } from "@testing-library/react";
import App, { allTabs, nextTabIndex } from "./App";
import { teachingTabs } from "./tabs";
import { contrastRatio } from "./contrast";

afterEach(cleanup);

describe("App shell", () => {
  it("lists teaching tabs first, then the hands-on tabs", () => {
    const ids = allTabs().map((t) => t.id);
    expect(ids.slice(0, teachingTabs.length)).toEqual(teachingTabs.map((t) => t.id));
    expect(ids.slice(teachingTabs.length)).toEqual(["training", "tools"]);
  });

  it("switches tabs and keeps the theme choice", async () => {
    window.location.hash = "#training";
    render(<App />);
    expect(screen.getByRole("tab", { name: "训练管理" }).getAttribute("aria-selected")).toBe("true");
    await screen.findByText("连接 / Connect", {}, { timeout: 10000 }); // the lazy chunk arrived
    fireEvent.click(screen.getByRole("tab", { name: "工具测试" }));
    expect(screen.getByRole("tab", { name: "工具测试" }).getAttribute("aria-selected")).toBe("true");
    const before = document.documentElement.dataset.theme;
    fireEvent.click(screen.getByTitle(/toggle theme/));
    expect(document.documentElement.dataset.theme).not.toBe(before);
    expect(localStorage.getItem("mm-theme")).toBe(document.documentElement.dataset.theme);
    cleanup();
  });

  it("moves between tabs with the arrow keys, Home and End (WAI-ARIA tabs), one tab in the Tab order", async () => {
    window.location.hash = "#architecture";
    const scrolled: string[] = [];
    // jsdom has no scrollIntoView: record which element the page asks to bring into view
    Element.prototype.scrollIntoView = function (this: Element) { scrolled.push(this.id); };
    render(<App />);
    const tab = (name: string) => screen.getByRole("tab", { name });
    expect(tab("架构总览").getAttribute("tabindex")).toBe("0");
    expect(tab("分词").getAttribute("tabindex")).toBe("-1");
    tab("架构总览").focus();
    fireEvent.keyDown(tab("架构总览"), { key: "ArrowRight" });
    expect(tab("分词").getAttribute("aria-selected")).toBe("true");
    expect(document.activeElement).toBe(tab("分词"));
    expect(window.location.hash).toBe("#tokenization");
    fireEvent.keyDown(tab("分词"), { key: "ArrowLeft" });
    fireEvent.keyDown(tab("架构总览"), { key: "ArrowLeft" }); // wraps to the last tab
    expect(tab("工具测试").getAttribute("aria-selected")).toBe("true");
    fireEvent.keyDown(tab("工具测试"), { key: "Home" });
    expect(tab("架构总览").getAttribute("aria-selected")).toBe("true");
    fireEvent.keyDown(tab("架构总览"), { key: "End" });
    expect(document.activeElement).toBe(tab("工具测试"));
    expect(screen.getByRole("tabpanel").getAttribute("aria-labelledby")).toBe("tab-tools");
    // the active tab is scrolled into the (phone-narrow, sideways-scrolling) tab bar each time
    await waitFor(() => expect(scrolled.at(-1)).toBe("tab-tools"));
    delete (Element.prototype as Partial<Element>).scrollIntoView;
    cleanup();
  });

  it("nextTabIndex wraps and ignores other keys", () => {
    expect(nextTabIndex("ArrowRight", 11, 12)).toBe(0);
    expect(nextTabIndex("ArrowLeft", 0, 12)).toBe(11);
    expect(nextTabIndex("a", 3, 12)).toBeNull();
  });
});

describe("contrast (WCAG AA: 4.5:1 for normal text)", () => {

  const theme = (selector: string) => {
    const block = css.slice(css.indexOf(selector)).split("}")[0];
    return Object.fromEntries([...block.matchAll(/--([\w-]+):\s*(#[0-9a-fA-F]{6})/g)].map((m) => [m[1], m[2]]));
  };
  const light = theme(":root {");
  const dark = { ...light, ...theme(':root[data-theme="dark"]') };

  it("computes the WCAG ratio", () => {
    expect(contrastRatio("#ffffff", "#000000")).toBeCloseTo(21, 5);
    expect(contrastRatio("#ffffff", "#6c9cff")).toBeCloseTo(2.68, 2); // the dark theme's old primary button
  });

  it.each([["light", light], ["dark", dark]] as const)("%s theme: primary and danger buttons, text, muted text", (_n, v) => {
    expect(contrastRatio(v["on-accent"], v.accent)).toBeGreaterThanOrEqual(4.5);
    expect(contrastRatio(v["on-danger"], v.danger)).toBeGreaterThanOrEqual(4.5);
    expect(contrastRatio(v.fg, v.bg)).toBeGreaterThanOrEqual(4.5);
    expect(contrastRatio(v.muted, v.bg)).toBeGreaterThanOrEqual(4.5);
    expect(contrastRatio(v.danger, v.bg)).toBeGreaterThanOrEqual(4.5);
  });
});
