import type React from "react";
import "./tabs.css";
import { ArchitectureTab } from "./Architecture";
import { TokenizationTab } from "./Tokenization";
import { EmbeddingTab } from "./Embedding";
import { AttentionTab } from "./Attention";
import { RopeTab } from "./Rope";
import { MoeTab } from "./Moe";
import { TrainingTab } from "./Training";
import { ForwardPassTab } from "./ForwardPass";
import { DeploymentTab } from "./Deployment";
import { AscendTab } from "./Ascend";

/**
 * Teaching tabs (issue 19). App.tsx renders these first, in this order, before the hands-on tabs
 * (training panel, tool playground). Each entry: a stable id (used in the URL hash), the tab title,
 * and the component to render. Their facts come from ../data/ (scripts/export_tutorial_data.py).
 */
export const teachingTabs: { id: string; title: string; component: React.ComponentType }[] = [
  { id: "architecture", title: "架构总览", component: ArchitectureTab },
  { id: "tokenization", title: "分词", component: TokenizationTab },
  { id: "embedding", title: "词嵌入", component: EmbeddingTab },
  { id: "attention", title: "注意力", component: AttentionTab },
  { id: "rope", title: "RoPE", component: RopeTab },
  { id: "ffn-moe", title: "FFN 与 MoE", component: MoeTab },
  { id: "pipeline", title: "训练流程", component: TrainingTab },
  { id: "forward", title: "前向传播", component: ForwardPassTab },
  { id: "deployment", title: "部署", component: DeploymentTab },
  { id: "ascend", title: "昇腾实战", component: AscendTab },
];
