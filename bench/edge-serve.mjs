// Serves the built edge worker in workerd through Miniflare's API, without wrangler dev's proxy
// in front (which costs a hop and ~4 file descriptors per streamed connection): what the edge
// benchmark rows measure. Bindings and migrations come from the repository's wrangler.toml.
//
//   node bench/edge-serve.mjs <port> <origin url> <token secret>
//
// Prints `RIDECAST_EDGE_READY <url>` once workerd answers; runs until killed.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";

const [port, originUrl, secret] = process.argv.slice(2);
if (!port || !originUrl || !secret) {
  console.error("usage: node bench/edge-serve.mjs <port> <origin url> <token secret>");
  process.exit(2);
}
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
process.chdir(root);
const { workerOptions } = unstable_getMiniflareWorkerOptions(path.join(root, "wrangler.toml"));
const mf = new Miniflare({
  ...workerOptions,
  modules: true,
  scriptPath: path.join(root, "edge-worker/build/index.js"),
  modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
  bindings: { ...workerOptions.bindings, ORIGIN_URL: originUrl, RIDECAST_TOKEN_SECRET: secret },
  host: "127.0.0.1",
  port: Number(port),
});
const url = await mf.ready;
console.log(`RIDECAST_EDGE_READY ${url.href}`);
