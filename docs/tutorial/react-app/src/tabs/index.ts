import { lazy } from "react";
import type React from "react";

/**
 * Teaching tabs (issue 19). App.tsx renders these first, in this order, before the hands-on tabs
 * (training panel, tool playground). Each entry: a stable id (used in the URL hash), the tab title,
 * and the component to render. Their facts come from ../data/ (scripts/export_tutorial_data.py).
 *
 * Each tab is its own chunk, loaded when first opened: the exported facts (240 kB of JSON) and the browser
 * tokenizer (444 kB tokenizer.json + @huggingface/tokenizers) made one 727 kB bundle, over Vite's 500 kB warning,
 * and a visitor of the first tab downloaded all of it.
 */
export const teachingTabs: { id: string; title: string; component: React.ComponentType }[] = [
  { id: "architecture", title: "架构总览", component: lazy(() => import("./Architecture").then((m) => ({ default: m.ArchitectureTab }))) },
  { id: "tokenization", title: "分词", component: lazy(() => import("./Tokenization").then((m) => ({ default: m.TokenizationTab }))) },
  { id: "embedding", title: "词嵌入", component: lazy(() => import("./Embedding").then((m) => ({ default: m.EmbeddingTab }))) },
  { id: "attention", title: "注意力", component: lazy(() => import("./Attention").then((m) => ({ default: m.AttentionTab }))) },
  { id: "rope", title: "RoPE", component: lazy(() => import("./Rope").then((m) => ({ default: m.RopeTab }))) },
  { id: "ffn-moe", title: "FFN 与 MoE", component: lazy(() => import("./Moe").then((m) => ({ default: m.MoeTab }))) },
  { id: "pipeline", title: "训练流程", component: lazy(() => import("./Training").then((m) => ({ default: m.TrainingTab }))) },
  { id: "forward", title: "前向传播", component: lazy(() => import("./ForwardPass").then((m) => ({ default: m.ForwardPassTab }))) },
  { id: "deployment", title: "部署", component: lazy(() => import("./Deployment").then((m) => ({ default: m.DeploymentTab }))) },
  { id: "ascend", title: "昇腾实战", component: lazy(() => import("./Ascend").then((m) => ({ default: m.AscendTab }))) },
];
