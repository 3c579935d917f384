// Serves the built edge worker in workerd through Miniflare's API, without wrangler dev's proxy
// in front (which costs a hop and ~4 file descriptors per streamed connection, and buffers
// streams without bound, so a stalled rider never pushes back): what the edge benchmark rows
// and the edge backpressure test use. Bindings and migrations come from the repository's
// wrangler.toml; extra NAME=value arguments become vars. RIDECAST_EDGE_BUILD=<dir> serves another
// build of the worker than edge-worker/build (an older one, to compare builds in one session).
//
//   node scripts/edge-serve.mjs <port> <origin url> <token secret> [NAME=value ...]
//
// Prints `RIDECAST_EDGE_READY <url>` once workerd answers; runs until killed.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";

const [port, originUrl, secret, ...extra] = process.argv.slice(2);
if (!port || !originUrl || !secret || extra.some((arg) => !arg.includes("="))) {
  console.error("usage: node scripts/edge-serve.mjs <port> <origin url> <token secret> [NAME=value ...]");
  process.exit(2);
}
const vars = Object.fromEntries(extra.map((arg) => [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)]));
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
process.chdir(root);
const { workerOptions } = unstable_getMiniflareWorkerOptions(path.join(root, "wrangler.toml"));
const mf = new Miniflare({
  ...workerOptions,
  modules: true,
  scriptPath: path.join(process.env.RIDECAST_EDGE_BUILD || path.join(root, "edge-worker/build"), "index.js"),
  modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
  bindings: { ...workerOptions.bindings, ...vars, ORIGIN_URL: originUrl, RIDECAST_TOKEN_SECRET: secret },
  host: "127.0.0.1",
  port: Number(port),
});
const url = await mf.ready;
console.log(`RIDECAST_EDGE_READY ${url.href}`);
