// vitest runs the client's own compiled tests where npm put them: node_modules is
// excluded by default, so the directory and the exact files are named here.
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    dir: "node_modules/@authzed/authzed-node/dist/src",
    include: ["v1.test.js", "v1-promise.test.js", "full.test.js", "full-promises.test.js"],
    exclude: [],
    testTimeout: 30000,
    hookTimeout: 30000,
  },
});
