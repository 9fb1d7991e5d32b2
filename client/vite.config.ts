/// <reference types="vitest/config" />
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// Settings come from GET /config at run time (see src/config.ts): nothing
// environment-specific is baked into the bundle, so one build serves any stack.
export default defineConfig({
  plugins: [react()],
  // Relative asset URLs: the bundle works from any path (local host, S3/CloudFront prefix).
  base: './',
  // Amplify (auth + GraphQL), react-markdown with remark-gfm and uPlot make one ~745 kB chunk (~231 kB gzip).
  build: { chunkSizeWarningLimit: 800 },
  server: {
    // `npm run dev`: /config comes from the running local cloud's client host.
    proxy: { '/config': process.env.LLM_STREAM_CLIENT_URL ?? 'http://127.0.0.1:4518' },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
