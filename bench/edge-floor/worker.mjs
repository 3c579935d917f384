// The floor of a rider stream in workerd, with no Rust and no wasm: the same two hops as the
// edge worker (worker -> one Durable Object -> a streamed SSE body), and nothing else. What this
// costs per stream and per event is what any worker of this shape pays. `bench/run.sh
// edge-floor` runs it.
//
// Var MODE: "stream" = a ReadableStream with a zero high-water mark the object enqueues into
// (what the edge worker does); "pipe" = workerd's IdentityTransformStream written to. `GET /push`
// sends one location-sized event to every stream.
export class Hub {
  constructor(state, env) {
    this.mode = env.MODE;
    this.streams = [];
  }

  async fetch(req) {
    if (new URL(req.url).pathname === "/push") {
      push(this.mode, this.streams);
      return new Response("ok");
    }
    return sse(open(this.mode, this.streams));
  }
}

export default {
  async fetch(req, env) {
    return env.HUB.get(env.HUB.idFromName("one")).fetch(req);
  },
};

function sse(body) {
  return new Response(body, { headers: { "content-type": "text/event-stream" } });
}

function open(mode, streams) {
  const first = new TextEncoder().encode("retry: 3000\n\n");
  if (mode === "stream") {
    return new ReadableStream(
      { start: (controller) => { controller.enqueue(first); streams.push(controller); } },
      { highWaterMark: 0 },
    );
  }
  const { readable, writable } = new IdentityTransformStream();
  const writer = writable.getWriter();
  writer.write(first).catch(() => {});
  streams.push(writer);
  return readable;
}

function push(mode, streams) {
  const ts = Date.now();
  const data = `{"driverId":"d-1","lat":37.7749,"lng":-122.4194,"heading":90,"speed":8.3,"ts":${ts}}`;
  const frame = new TextEncoder().encode(`event: location\nid: ${ts}\ndata: ${data}\n\n`);
  for (const s of streams) {
    try {
      if (mode === "stream") s.enqueue(frame);
      else s.write(frame).catch(() => {});
    } catch {
      // a stream whose rider left
    }
  }
}
