import { describe, expect, it } from "vitest";
import { render, screen, fireEvent, cleanup } from "@testing-library/react";
import App, { allTabs } from "./App";
import { teachingTabs } from "./tabs";

describe("App shell", () => {
  it("lists teaching tabs first, then the hands-on tabs", () => {
    const ids = allTabs().map((t) => t.id);
    expect(ids.slice(0, teachingTabs.length)).toEqual(teachingTabs.map((t) => t.id));
    expect(ids.slice(teachingTabs.length)).toEqual(["training", "tools"]);
  });

  it("switches tabs and keeps the theme choice", () => {
    window.location.hash = "#training";
    render(<App />);
    expect(screen.getByRole("tab", { name: "训练管理" }).getAttribute("aria-selected")).toBe("true");
    fireEvent.click(screen.getByRole("tab", { name: "工具测试" }));
    expect(screen.getByRole("tab", { name: "工具测试" }).getAttribute("aria-selected")).toBe("true");
    const before = document.documentElement.dataset.theme;
    fireEvent.click(screen.getByTitle(/toggle theme/));
    expect(document.documentElement.dataset.theme).not.toBe(before);
    expect(localStorage.getItem("mm-theme")).toBe(document.documentElement.dataset.theme);
    cleanup();
  });
});
