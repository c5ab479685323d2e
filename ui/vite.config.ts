/// <reference types="vitest" />
import { defineConfig } from 'vite';

// The dev server proxies the API and the agent WebSocket to a local `voxgate serve`
// (VOXGATE_URL to point elsewhere), so the app talks to one origin as in production.
const target = process.env.VOXGATE_URL ?? 'http://127.0.0.1:3010';

export default defineConfig({
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  server: {
    port: 5175,
    strictPort: true,
    proxy: {
      '/api': { target, changeOrigin: false },
      '/config.json': { target },
      '/agent': { target: target.replace(/^http/, 'ws'), ws: true },
    },
  },
  build: {
    target: 'es2022',
    // The binary embeds dist/: no source maps, to keep it small.
    sourcemap: false,
    assetsInlineLimit: 0,
    rollupOptions: {
      // Supabase's client is loaded only when Supabase sign-in is configured: name its chunk.
      output: { manualChunks: (id) => (id.includes('node_modules/@supabase/') ? 'supabase' : undefined) },
    },
  },
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
    testTimeout: 20000,
  },
});
