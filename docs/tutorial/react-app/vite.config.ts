/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// base "./": every asset URL in the build is relative, so the same dist/ works at "/" (served by
// scripts/serve_train_manager.py or nginx) and under a sub-path such as GitHub Pages' /<repo>/.
export default defineConfig({
  base: "./",
  plugins: [react()],
  server: {
    port: 5173,
    // `npm run dev` talks to a local manager / API server through the dev server, same origin as in production.
    proxy: {
      "/api": { target: "http://127.0.0.1:8999", changeOrigin: false }, // keep Host: the manager checks Origin == Host
      "/mcp": { target: "http://127.0.0.1:8999", changeOrigin: false },
    },
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
    // App.test.tsx reads the theme colours from styles.css (?raw) to check their contrast; other CSS stays empty
    css: { include: [/styles\.css/] },
  },
});
