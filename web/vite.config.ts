import { fileURLToPath } from 'node:url';
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// Run from the repository root (`vite build --config web/vite.config.ts`): paths are anchored to
// this file, not to the working directory.
const root = fileURLToPath(new URL('.', import.meta.url));
const api = process.env.API_URL ?? 'http://localhost:8000';

export default defineConfig({
  root,
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
  },
  server: {
    proxy: Object.fromEntries(
      ['/api', '/health', '/docs', '/openapi.json', '/metrics'].map((path) => [path, { target: api, changeOrigin: true }]),
    ),
  },
  preview: {
    proxy: Object.fromEntries(
      ['/api', '/health', '/docs', '/openapi.json', '/metrics'].map((path) => [path, { target: api, changeOrigin: true }]),
    ),
  },
});
