// Ridecast live demo: the code behind every page. Each HTML page sets <body data-page="..."> and
// loads this module, which runs that page. Everything here talks to the origin through its public
// API (PROTOCOL.md) exactly as a rider's or a driver's app would; the only demo-only endpoints
// are /demo/token (dev-mode tokens), /demo/city.json (the map) and /demo/sse/fleet (the overview).
//
// Pages expose their state to the browser test through data-* attributes and data-testid
// (tests/browser/demo.mjs), never through globals.

// ---------------------------------------------------------------------------------------------
// Small helpers

const SVG_NS = 'http://www.w3.org/2000/svg';
const $ = (selector, root = document) => root.querySelector(selector);

/** Creates an HTML element: el('li', {class: 'x', dataset: {id: 1}}, 'text', child). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

/** Creates an SVG element with attributes. */
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
}

/** Random hex from crypto.getRandomValues (randomUUID needs a secure context; http on a LAN address is not one). */
function randomHex(bytes) {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, '0')).join('');
}

const wsUrl = (path) => `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}${path}`;
const clock = (ms = Date.now()) => new Date(ms).toLocaleTimeString([], { hour12: false });
const fmtInt = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–');
const fmtMult = (m) => `×${Number(m).toFixed(1)}`;
const round5 = (x) => Math.round(x * 1e5) / 1e5;
const fmtLatLng = (p) => `${p.lat.toFixed(5)}, ${p.lng.toFixed(5)}`;

function fmtDistance(m) {
  if (!Number.isFinite(m)) return '–';
  return m < 1000 ? `${Math.round(m / 10) * 10} m` : `${(m / 1000).toFixed(1)} km`;
}

function fmtEta(m, speed) {
  return `~${Math.max(1, Math.round(m / speed / 60))} min`;
}

/** Great-circle distance in metres. */
function distanceM(a, b) {
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLng = (b.lng - a.lng) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLng / 2) ** 2;
  return 2 * 6371000 * Math.asin(Math.min(1, Math.sqrt(h)));
}

/** Compass bearing from a to b, degrees clockwise from north. */
function bearing(a, b) {
  const rad = Math.PI / 180;
  const y = Math.sin((b.lng - a.lng) * rad) * Math.cos(b.lat * rad);
  const x = Math.cos(a.lat * rad) * Math.sin(b.lat * rad) - Math.sin(a.lat * rad) * Math.cos(b.lat * rad) * Math.cos((b.lng - a.lng) * rad);
  return (Math.atan2(y, x) / rad + 360) % 360;
}

/** An HTTP error carrying the contract's error code. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the origin's HTTP API; resolves to the parsed JSON body, rejects with an ApiError. */
async function api(method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const code = data?.error?.code ?? 'http_error';
    throw new ApiError(response.status, code, data?.error?.message ?? `${method} ${path} answered ${response.status}`);
  }
  return data;
}

/** A dev-mode token from the origin: {token, sub}. */
const mintToken = (role) => api('POST', '/demo/token', { body: { role } });

const loadCity = () => api('GET', '/demo/city.json');

/** Shows a short message over the map. */
function toast(text, ms = 3500) {
  const host = $('#toasts');
  if (!host) return;
  const node = el('div', { class: 'toast', role: 'status' }, text);
  host.append(node);
  setTimeout(() => node.remove(), ms);
}

function setDot(node, state) {
  if (node) node.dataset.state = state;
}

/** Shows an EventSource's state on a status dot: open, connecting (retrying) or closed (refused). */
function watchEventSource(source, dot) {
  setDot(dot, 'connecting');
  source.addEventListener('open', () => setDot(dot, 'open'));
  source.addEventListener('error', () => setDot(dot, source.readyState === EventSource.CLOSED ? 'closed' : 'connecting'));
}

// ---------------------------------------------------------------------------------------------
// What crossed the wire: a small live log on the rider and driver pages.

class WireLog {
  constructor(list, counter) {
    this.list = list;
    this.counter = counter;
    this.count = 0;
  }

  /** kind: sse | ws | http | err */
  add(kind, channel, what) {
    this.count += 1;
    if (this.counter) this.counter.textContent = String(this.count);
    if (!this.list) return;
    this.list.prepend(
      el('li', {}, el('span', { class: 't' }, clock()), el('span', { class: `ch ${kind}` }, channel), el('span', { class: 'what', title: what }, what)),
    );
    while (this.list.childElementCount > 120) this.list.lastElementChild.remove();
  }
}

// ---------------------------------------------------------------------------------------------
// The map: city.json drawn as SVG (no tiles), with markers that glide.

const VIEW_WIDTH = 1000;
const PAD = 28;

class CityMap {
  constructor(root, city) {
    this.root = root;
    this.city = city;
    const { south, west, north, east } = city.bounds;
    this.kx = Math.cos(((south + north) / 2) * (Math.PI / 180));
    this.scale = (VIEW_WIDTH - 2 * PAD) / ((east - west) * this.kx);
    this.west = west;
    this.north = north;
    this.height = (north - south) * this.scale + 2 * PAD;
    root.setAttribute('viewBox', `0 0 ${VIEW_WIDTH} ${this.height.toFixed(1)}`);
    root.setAttribute('preserveAspectRatio', 'xMidYMid meet');
    root.classList.add('map');
    root.replaceChildren();
    this.layers = {};
    for (const name of ['land', 'zones', 'streets', 'labels', 'routes', 'fleet', 'pins', 'cars']) {
      this.layers[name] = root.appendChild(svg('g', { class: name }));
    }
    this.#draw();
    this.graph = new StreetGraph(this);
  }

  /** {lat,lng} to [x,y] in map units. */
  project(p) {
    return [PAD + (p.lng - this.west) * this.kx * this.scale, PAD + (this.north - p.lat) * this.scale];
  }

  /** [x,y] in map units to {lat,lng}. */
  unproject([x, y]) {
    return { lat: round5(this.north - (y - PAD) / this.scale), lng: round5(this.west + (x - PAD) / (this.kx * this.scale)) };
  }

  /** A pointer event's position in map units. */
  eventPoint(event) {
    const point = this.root.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    const local = point.matrixTransform(this.root.getScreenCTM().inverse());
    return [local.x, local.y];
  }

  /** The nearest point on a street to p ({lat,lng}): {lat, lng, street}. */
  snap(p) {
    const [px, py] = this.project(p);
    let best = { d: Infinity, x: px, y: py, street: '' };
    for (const street of this.streetsXY) {
      for (let i = 1; i < street.points.length; i++) {
        const [x, y] = closestOnSegment([px, py], street.points[i - 1], street.points[i]);
        const d = Math.hypot(x - px, y - py);
        if (d < best.d) best = { d, x, y, street: street.name };
      }
    }
    return { ...this.unproject([best.x, best.y]), street: best.street };
  }

  /** The name of the street nearest p, for labels. */
  streetName(p) {
    return this.snap(p).street || fmtLatLng(p);
  }

  /** Colours a zone by its surge multiplier. */
  setSurge(zoneId, multiplier) {
    const zone = this.root.querySelector(`.zone[data-zone="${CSS.escape(zoneId)}"]`);
    const label = this.root.querySelector(`.zone-label[data-zone="${CSS.escape(zoneId)}"]`);
    if (!zone || !label) return;
    zone.dataset.surging = String(multiplier > 1.0);
    label.dataset.surging = zone.dataset.surging;
    label.textContent = multiplier > 1.0 ? `${zone.dataset.name} · surge ${fmtMult(multiplier)}` : zone.dataset.name;
  }

  /** Calls back with {lat,lng} for a click on the map that was not a drag. */
  onClick(callback) {
    let down = null;
    this.root.addEventListener('pointerdown', (e) => {
      down = [e.clientX, e.clientY];
    });
    this.root.addEventListener('click', (e) => {
      if (down && Math.hypot(e.clientX - down[0], e.clientY - down[1]) > 5) return;
      callback(this.unproject(this.eventPoint(e)), e);
    });
  }

  #draw() {
    const { land, zones, streets, labels } = this.layers;
    land.append(svg('rect', { class: 'land', x: -VIEW_WIDTH, y: -this.height, width: VIEW_WIDTH * 3, height: this.height * 3 }));
    for (const zone of this.city.zones ?? []) {
      const [x0, y0] = this.project({ lat: zone.bounds.north, lng: zone.bounds.west });
      const [x1, y1] = this.project({ lat: zone.bounds.south, lng: zone.bounds.east });
      zones.append(svg('rect', { class: 'zone', x: x0, y: y0, width: x1 - x0, height: y1 - y0, rx: 10, dataset: { zone: zone.id, name: zone.name } }));
    }
    this.streetsXY = (this.city.streets ?? []).map((s) => ({ name: s.name, points: s.points.map((p) => this.project(p)) }));
    // Diagonal avenues (and Market St, whatever its shape) are drawn wider than the grid.
    const wide = (s) => /market/i.test(s.name) || isDiagonal(s.points);
    for (const [pass, cls] of [[0, 'street-edge'], [1, 'street']]) {
      for (const s of this.streetsXY) {
        const w = wide(s) ? 15 : 10;
        streets.append(
          svg('polyline', {
            class: cls,
            points: s.points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' '),
            'stroke-width': pass === 0 ? w + 3 : w,
          }),
        );
      }
    }
    // One label per street, staggered along it so that crossing streets' labels do not collide.
    this.streetsXY.forEach((s, i) => {
      const label = labelPlacement(s.points, 0.2 + ((i * 0.37) % 0.6));
      if (!label) return;
      labels.append(
        svg(
          'text',
          {
            class: 'street-label',
            x: label.x.toFixed(1),
            y: label.y.toFixed(1),
            'text-anchor': 'middle',
            'dominant-baseline': 'central',
            transform: `rotate(${label.angle.toFixed(1)} ${label.x.toFixed(1)} ${label.y.toFixed(1)})`,
          },
          s.name,
        ),
      );
    });
    // Zone names last, above the streets and their names.
    for (const zone of this.city.zones ?? []) {
      const [x0, y0] = this.project({ lat: zone.bounds.north, lng: zone.bounds.west });
      const [x1] = this.project({ lat: zone.bounds.south, lng: zone.bounds.east });
      labels.append(svg('text', { class: 'zone-label', x: (x0 + x1) / 2, y: y0 + 24, 'text-anchor': 'middle', dataset: { zone: zone.id } }, zone.name));
    }
  }
}

function isDiagonal(points) {
  const [a, b] = [points[0], points[points.length - 1]];
  const angle = Math.abs((Math.atan2(b[1] - a[1], b[0] - a[0]) * 180) / Math.PI) % 90;
  return angle > 15 && angle < 75;
}

function closestOnSegment([px, py], [ax, ay], [bx, by]) {
  const dx = bx - ax;
  const dy = by - ay;
  const len2 = dx * dx + dy * dy;
  const t = len2 === 0 ? 0 : Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / len2));
  return [ax + t * dx, ay + t * dy];
}

/** Where along a polyline (a fraction of its length) a label goes, turned to read left to right. */
function labelPlacement(points, fraction) {
  const lengths = [];
  let total = 0;
  for (let i = 1; i < points.length; i++) {
    const l = Math.hypot(points[i][0] - points[i - 1][0], points[i][1] - points[i - 1][1]);
    lengths.push(l);
    total += l;
  }
  if (total < 120) return null;
  let target = total * fraction;
  for (let i = 0; i < lengths.length; i++) {
    if (target <= lengths[i] || i === lengths.length - 1) {
      const [a, b] = [points[i], points[i + 1]];
      const t = lengths[i] === 0 ? 0 : Math.min(1, target / lengths[i]);
      let angle = (Math.atan2(b[1] - a[1], b[0] - a[0]) * 180) / Math.PI;
      if (angle > 90) angle -= 180;
      if (angle < -90) angle += 180;
      return { x: a[0] + (b[0] - a[0]) * t, y: a[1] + (b[1] - a[1]) * t, angle };
    }
    target -= lengths[i];
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Routing along the streets (the rider's planned trip, the driver page's "drive there"): a graph
// of street points and crossings, shortest path by Dijkstra. The city is small, so the simple
// O(n^2) version is plenty.

class StreetGraph {
  constructor(map) {
    this.map = map;
    this.nodes = [];
    this.edges = [];
    const index = new Map();
    const nodeAt = ([x, y]) => {
      const key = `${Math.round(x * 4)},${Math.round(y * 4)}`;
      if (!index.has(key)) {
        index.set(key, this.nodes.length);
        this.nodes.push([x, y]);
        this.edges.push([]);
      }
      return index.get(key);
    };
    const segments = [];
    for (const s of map.streetsXY) {
      for (let i = 1; i < s.points.length; i++) segments.push([s.points[i - 1], s.points[i]]);
    }
    for (let i = 0; i < segments.length; i++) {
      const [a, b] = segments[i];
      const cuts = [0, 1];
      for (let j = 0; j < segments.length; j++) {
        const t = i === j ? null : crossing(a, b, segments[j][0], segments[j][1]);
        if (t !== null) cuts.push(t);
      }
      cuts.sort((x, y) => x - y);
      let previous = null;
      for (const t of cuts) {
        const id = nodeAt([a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t]);
        if (previous !== null && previous !== id) this.#link(previous, id);
        previous = id;
      }
    }
  }

  #link(a, b) {
    const w = Math.hypot(this.nodes[a][0] - this.nodes[b][0], this.nodes[a][1] - this.nodes[b][1]);
    this.edges[a].push([b, w]);
    this.edges[b].push([a, w]);
  }

  /** The nearest edge to p: {a, b, point}. */
  #attach(p) {
    let best = null;
    for (let a = 0; a < this.nodes.length; a++) {
      for (const [b] of this.edges[a]) {
        if (b < a) continue;
        const [x, y] = closestOnSegment(p, this.nodes[a], this.nodes[b]);
        const d = Math.hypot(x - p[0], y - p[1]);
        if (!best || d < best.d) best = { a, b, point: [x, y], d };
      }
    }
    return best;
  }

  /** {lat,lng} points from `from` to `to` along the streets (a straight line if there are none). */
  route(from, to) {
    const start = this.#attach(this.map.project(from));
    const end = this.#attach(this.map.project(to));
    if (!start || !end) return [from, to];
    const sameEdge = (start.a === end.a && start.b === end.b) || (start.a === end.b && start.b === end.a);
    if (sameEdge) return [from, this.map.unproject(start.point), this.map.unproject(end.point), to];
    const n = this.nodes.length;
    const dist = new Array(n).fill(Infinity);
    const prev = new Array(n).fill(-1);
    const done = new Array(n).fill(false);
    const len = (p, q) => Math.hypot(p[0] - q[0], p[1] - q[1]);
    dist[start.a] = len(start.point, this.nodes[start.a]);
    dist[start.b] = len(start.point, this.nodes[start.b]);
    for (;;) {
      let u = -1;
      for (let i = 0; i < n; i++) if (!done[i] && dist[i] < Infinity && (u < 0 || dist[i] < dist[u])) u = i;
      if (u < 0) break;
      done[u] = true;
      for (const [v, w] of this.edges[u]) {
        if (dist[u] + w < dist[v]) {
          dist[v] = dist[u] + w;
          prev[v] = u;
        }
      }
    }
    const viaA = dist[end.a] + len(this.nodes[end.a], end.point);
    const viaB = dist[end.b] + len(this.nodes[end.b], end.point);
    if (!Number.isFinite(Math.min(viaA, viaB))) return [from, to];
    const path = [];
    for (let node = viaA <= viaB ? end.a : end.b; node !== -1; node = prev[node]) path.unshift(this.nodes[node]);
    return [from, this.map.unproject(start.point), ...path.map((p) => this.map.unproject(p)), this.map.unproject(end.point), to];
  }
}

/** Where segment ab crosses segment cd, as a fraction of ab strictly inside it, or null. */
function crossing(a, b, c, d) {
  const r = [b[0] - a[0], b[1] - a[1]];
  const s = [d[0] - c[0], d[1] - c[1]];
  const denom = r[0] * s[1] - r[1] * s[0];
  if (Math.abs(denom) < 1e-9) return null;
  const t = ((c[0] - a[0]) * s[1] - (c[1] - a[1]) * s[0]) / denom;
  const u = ((c[0] - a[0]) * r[1] - (c[1] - a[1]) * r[0]) / denom;
  const eps = 1e-6;
  return t > eps && t < 1 - eps && u >= -eps && u <= 1 + eps ? t : null;
}

const pointsAttr = (map, points) => points.map((p) => map.project(p).map((v) => v.toFixed(1)).join(',')).join(' ');

// One animation loop for every gliding marker.
const moving = new Set();
let frameRequested = false;

function frame(now) {
  frameRequested = false;
  for (const marker of moving) marker.step(now);
  if (moving.size > 0) requestFrame();
}

function requestFrame() {
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(frame);
  }
}

/** A marker on the map: a car (with a heading arrow) or a pin (pickup / drop-off). */
class Marker {
  constructor(map, layer, { kind = 'car', color, label, classes = '', testid, title } = {}) {
    this.map = map;
    this.xy = null;
    this.node = svg('g', { class: `${kind} ${classes}`.trim(), 'data-testid': testid });
    if (kind === 'car') {
      this.node.append(
        svg('circle', { class: 'halo', r: 26 }),
        svg('circle', { class: 'body', r: 11.5, fill: color }),
        (this.arrow = svg('path', { class: 'nose', d: 'M0,-7 L5,5 L0,2.5 L-5,5 Z' })),
      );
    } else if (kind === 'pickup') {
      this.node.append(svg('circle', { r: 13, fill: 'var(--pickup)', stroke: '#fff', 'stroke-width': 4 }), svg('circle', { r: 4.5, fill: '#fff' }));
    } else {
      this.node.append(
        svg('rect', { x: -11, y: -11, width: 22, height: 22, rx: 3, fill: 'var(--dropoff)', stroke: '#fff', 'stroke-width': 4 }),
        svg('rect', { x: -4, y: -4, width: 8, height: 8, fill: '#fff' }),
      );
    }
    // Pins are labelled above, cars below: a car waiting on its pickup keeps both readable.
    const labelY = kind === 'car' ? 30 : -20;
    if (label) this.labelNode = this.node.appendChild(svg('text', { class: 'pin-label', y: labelY, 'text-anchor': 'middle' }, label));
    if (title) this.titleNode = this.node.appendChild(svg('title', {}, title));
    this.node.style.display = 'none';
    layer.append(this.node);
  }

  setColor(color) {
    this.node.querySelector('.body')?.setAttribute('fill', color);
  }

  setTitle(text) {
    if (this.titleNode) this.titleNode.textContent = text;
  }

  setHeading(degrees) {
    if (this.arrow && Number.isFinite(degrees)) this.arrow.setAttribute('transform', `rotate(${degrees.toFixed(0)})`);
  }

  /** Moves to p ({lat,lng}), gliding there over `ms` milliseconds (0: at once). */
  moveTo(p, ms = 0) {
    this.latlng = p;
    this.node.dataset.lat = String(p.lat);
    this.node.dataset.lng = String(p.lng);
    const to = this.map.project(p);
    if (!this.xy || ms <= 0) {
      this.animation = null;
      moving.delete(this);
      this.#place(to);
      return;
    }
    this.animation = { from: this.xy, to, start: performance.now(), ms };
    moving.add(this);
    requestFrame();
  }

  step(now) {
    const a = this.animation;
    if (!a) {
      moving.delete(this);
      return;
    }
    const f = Math.min(1, (now - a.start) / a.ms);
    this.#place([a.from[0] + (a.to[0] - a.from[0]) * f, a.from[1] + (a.to[1] - a.from[1]) * f]);
    if (f >= 1) {
      this.animation = null;
      moving.delete(this);
    }
  }

  #place([x, y]) {
    this.xy = [x, y];
    this.node.setAttribute('transform', `translate(${x.toFixed(2)} ${y.toFixed(2)})`);
    this.node.style.display = '';
  }

  hide() {
    this.node.style.display = 'none';
    this.xy = null;
    this.animation = null;
    moving.delete(this);
  }

  remove() {
    moving.delete(this);
    this.node.remove();
  }
}

const STATE_LABELS = {
  free: 'Free',
  offered: 'Offer pending',
  to_pickup: 'To pickup',
  to_dropoff: 'On a trip',
  offline: 'Offline',
};
const stateColor = (state) => `var(--state-${state in STATE_LABELS ? state : 'offline'})`;

/** Every simulated driver from /demo/sse/fleet, as cars on the map. */
class FleetLayer {
  constructor(map, { faint = false, exclude = () => false, onUpdate } = {}) {
    this.map = map;
    this.faint = faint;
    this.exclude = exclude;
    this.onUpdate = onUpdate;
    this.cars = new Map();
    this.layer = map.layers.fleet;
  }

  follow(dot) {
    this.source = new EventSource('/demo/sse/fleet');
    watchEventSource(this.source, dot);
    this.source.addEventListener('fleet', (event) => this.#apply(JSON.parse(event.data)));
    return this;
  }

  setVisible(visible) {
    this.layer.style.display = visible ? '' : 'none';
  }

  #apply(snapshot) {
    const seen = new Set();
    for (const d of snapshot.drivers ?? []) {
      if (this.exclude(d.id)) continue;
      seen.add(d.id);
      let car = this.cars.get(d.id);
      if (!car) {
        car = new Marker(this.map, this.layer, { classes: this.faint ? 'faint' : '', testid: 'fleet-driver', title: d.id });
        car.node.dataset.id = d.id;
        this.cars.set(d.id, car);
      }
      car.node.dataset.state = d.state;
      car.setColor(this.faint ? 'var(--state-offline)' : stateColor(d.state));
      car.setTitle(`${d.id} · ${STATE_LABELS[d.state] ?? d.state}`);
      car.setHeading(d.heading);
      // Snapshots come once a second: glide for that long, so that the city never stops moving.
      car.moveTo({ lat: d.lat, lng: d.lng }, car.xy ? 1000 : 0);
    }
    for (const [id, car] of this.cars) {
      if (!seen.has(id)) {
        car.remove();
        this.cars.delete(id);
      }
    }
    this.onUpdate?.(snapshot);
  }
}

/** Follows a zone's surge over SSE (any rider token): the badge and the zone on the map. */
function followSurge({ token, zoneId = 'downtown', badge, map, wire, dot }) {
  const source = new EventSource(`/api/sse/surge/${zoneId}?token=${encodeURIComponent(token)}`);
  watchEventSource(source, dot);
  source.addEventListener('surge', (event) => {
    const value = JSON.parse(event.data);
    showSurge(badge, value.multiplier);
    map?.setSurge(zoneId, value.multiplier);
    wire?.add('sse', 'surge', `${value.zoneId} ${fmtMult(value.multiplier)} (id ${event.lastEventId})`);
  });
  return source;
}

function showSurge(badge, multiplier) {
  const previous = badge.dataset.multiplier;
  badge.dataset.multiplier = String(multiplier);
  badge.dataset.level = multiplier >= 1.8 ? 'high' : multiplier > 1.0 ? 'low' : 'none';
  $('.mult', badge).textContent = fmtMult(multiplier);
  $('.what', badge).textContent = multiplier > 1.0 ? 'Downtown surge' : 'Downtown: no surge';
  if (previous !== undefined && previous !== String(multiplier)) {
    badge.classList.remove('flash');
    void badge.offsetWidth; // restart the animation
    badge.classList.add('flash');
  }
}

// ---------------------------------------------------------------------------------------------
// Ride chat over WebSocket /ws/chat/{rideId}: history first, the echo as acknowledgement (a
// message stays greyed out until the server has stored it), typing, resume with ?since= after a
// drop (unconfirmed messages go again with the same clientMsgId, which the server stores once).

class ChatPanel {
  constructor({ root, me, other, wire }) {
    this.root = root;
    this.me = me;
    this.other = other;
    this.wire = wire;
    this.log = $('[data-testid="chat-log"]', root);
    this.input = $('[data-testid="chat-input"]', root);
    this.typing = $('[data-testid="chat-typing"]', root);
    this.dot = $('[data-testid="chat-state"]', root);
    this.pending = new Map();
    this.shown = new Set();
    this.lastTypingSent = 0;
    $('form', root).addEventListener('submit', (e) => {
      e.preventDefault();
      const text = this.input.value.trim();
      if (!text || !this.rideId) return;
      this.send(text);
      this.input.value = '';
    });
    this.input.addEventListener('input', () => {
      const now = Date.now();
      if (this.socket?.readyState === WebSocket.OPEN && this.input.value && now - this.lastTypingSent > 1000) {
        this.lastTypingSent = now;
        this.socket.send(JSON.stringify({ type: 'typing' }));
      }
    });
  }

  open(rideId, token) {
    this.close();
    this.rideId = rideId;
    this.token = token;
    this.lastId = null;
    this.backoff = 500;
    this.log.replaceChildren();
    this.pending.clear();
    this.shown.clear();
    this.root.hidden = false;
    this.#connect();
  }

  close() {
    this.rideId = null;
    clearTimeout(this.retryTimer);
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close(1000);
      this.socket = null;
    }
    setDot(this.dot, 'closed');
  }

  send(text) {
    const clientMsgId = `c-${randomHex(8)}`;
    const item = this.#bubble({ from: this.me, text, clientMsgId }, true);
    this.pending.set(clientMsgId, { text, item });
    this.log.append(item);
    this.#scroll();
    this.#transmit(clientMsgId, text);
  }

  #transmit(clientMsgId, text) {
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: 'message', clientMsgId, text }));
      this.wire?.add('ws', 'chat ↑', `${clientMsgId}: ${text}`);
    }
  }

  #connect() {
    const since = this.lastId ? `&since=${encodeURIComponent(this.lastId)}` : '';
    const socket = new WebSocket(wsUrl(`/ws/chat/${this.rideId}?token=${encodeURIComponent(this.token)}${since}`));
    this.socket = socket;
    setDot(this.dot, 'connecting');
    socket.onopen = () => {
      setDot(this.dot, 'open');
      this.backoff = 500;
      this.wire?.add('ws', 'chat', `connected${since ? ` (resuming after ${this.lastId})` : ''}`);
      for (const [clientMsgId, { text }] of this.pending) this.#transmit(clientMsgId, text);
    };
    socket.onmessage = (event) => this.#onFrame(JSON.parse(event.data));
    socket.onclose = (event) => {
      setDot(this.dot, 'connecting');
      this.wire?.add('err', 'chat', `closed (${event.code}); reconnecting`);
      this.retryTimer = setTimeout(() => this.rideId && this.#connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 8000);
    };
  }

  #onFrame(frame) {
    if (frame.type === 'message') {
      this.lastId = frame.id;
      if (this.shown.has(frame.id)) return;
      this.shown.add(frame.id);
      this.wire?.add('ws', 'chat ↓', `${frame.from}: ${frame.text}`);
      const mine = frame.from === this.me;
      const waiting = mine && frame.clientMsgId ? this.pending.get(frame.clientMsgId) : null;
      if (waiting) {
        waiting.item.remove();
        this.pending.delete(frame.clientMsgId);
      }
      this.log.append(this.#bubble(frame, false));
      // Unconfirmed messages stay at the bottom, after everything the server has ordered.
      for (const { item } of this.pending.values()) this.log.append(item);
      if (!mine) this.#showTyping(false);
      this.#scroll();
    } else if (frame.type === 'typing') {
      if (frame.from !== this.me) this.#showTyping(true);
    } else if (frame.type === 'error') {
      this.wire?.add('err', 'chat', `${frame.code}: ${frame.message}`);
      toast(`Chat: ${frame.message}`);
    }
  }

  #bubble(message, pending) {
    const mine = message.from === this.me;
    const who = mine ? 'You' : this.other;
    return el(
      'li',
      {
        class: `msg ${mine ? 'mine' : 'theirs'}${pending ? ' pending' : ''}`,
        'data-testid': 'chat-message',
        dataset: { from: message.from, id: message.id ?? '', clientMsgId: message.clientMsgId ?? '' },
      },
      message.text,
      el('span', { class: 'meta' }, pending ? `${who} · sending…` : `${who} · ${clock(message.ts)}`),
    );
  }

  #showTyping(on) {
    clearTimeout(this.typingTimer);
    this.typing.hidden = !on;
    if (on) this.typingTimer = setTimeout(() => (this.typing.hidden = true), 3000);
  }

  #scroll() {
    this.log.scrollTop = this.log.scrollHeight;
  }
}

// ---------------------------------------------------------------------------------------------
// The rider page

const STATUS_LABELS = {
  idle: 'Ready',
  requesting: 'Requesting…',
  searching: 'Searching',
  driver_assigned: 'Driver assigned',
  driver_arrived: 'Driver here',
  in_progress: 'On the trip',
  completed: 'Completed',
  no_driver: 'No driver',
  cancelled: 'Cancelled',
};
const STEPS = ['requested', 'assigned', 'arriving', 'trip', 'arrived'];
const UNDER_WAY = ['driver_assigned', 'driver_arrived', 'in_progress'];

async function riderPage() {
  const wire = new WireLog($('#wire-log'), $('#wire-count'));
  const city = await loadCity();
  const map = new CityMap($('#map'), city);
  const me = await mintToken('rider');
  $('#rider-id').textContent = me.sub;
  wire.add('http', 'token', `POST /demo/token → rider ${me.sub}`);

  followSurge({ token: me.token, badge: $('#surge-badge'), map, wire, dot: $('#surge-state') });
  // Cars nearby while choosing, as ride apps show them (the demo's fleet feed, not rider API).
  const nearby = new FleetLayer(map, { faint: true }).follow();

  // Pickup and drop-off: on streets by default; a click on the map sets the one being picked.
  const pins = {
    pickup: new Marker(map, map.layers.pins, { kind: 'pickup', label: 'Pickup', testid: 'pickup-marker' }),
    dropoff: new Marker(map, map.layers.pins, { kind: 'dropoff', label: 'Drop-off', testid: 'dropoff-marker' }),
  };
  const places = {};
  const setPlace = (which, p) => {
    const snapped = map.snap(p);
    places[which] = { lat: snapped.lat, lng: snapped.lng };
    pins[which].moveTo(places[which]);
    $(`#${which}-where`).textContent = snapped.street || 'Pinned spot';
    $(`#${which}-coords`).textContent = fmtLatLng(snapped);
    drawTrip();
  };
  const { center, bounds } = city;
  setPlace('pickup', { lat: center.lat + (bounds.north - center.lat) * 0.12, lng: center.lng - (center.lng - bounds.west) * 0.18 });
  setPlace('dropoff', { lat: center.lat + (bounds.north - center.lat) * 0.62, lng: center.lng + (bounds.east - center.lng) * 0.6 });

  let picking = 'pickup';
  const pickButtons = { pickup: $('#pick-pickup'), dropoff: $('#pick-dropoff') };
  const setPicking = (which) => {
    picking = which;
    for (const [k, b] of Object.entries(pickButtons)) b.setAttribute('aria-pressed', String(k === which));
  };
  for (const [k, b] of Object.entries(pickButtons)) b.addEventListener('click', () => setPicking(k));
  map.onClick((p) => {
    if (ride) return; // a requested ride's places are fixed
    setPlace(picking, p);
    setPicking(picking === 'pickup' ? 'dropoff' : 'pickup');
  });

  const statusPill = $('#ride-status');
  const requestButton = $('#request-ride');
  const cancelButton = $('#cancel-ride');
  const chat = new ChatPanel({ root: $('#chat'), me: 'rider', other: 'Driver', wire });
  let ride = null; // {rideId, token, status, driverId, pickup, dropoff, streams, requestedAt}
  let car = null;

  function drawTrip() {
    map.layers.routes.replaceChildren();
    if (places.pickup && places.dropoff) {
      map.layers.routes.append(svg('polyline', { class: 'route', points: pointsAttr(map, map.graph.route(places.pickup, places.dropoff)) }));
    }
    map.layers.routes.append(svg('polyline', { class: 'route approach', id: 'approach' }));
  }
  const setApproach = (points) => $('#approach').setAttribute('points', points ? pointsAttr(map, points) : '');

  function setStep(step, notes = {}) {
    const at = STEPS.indexOf(step);
    for (const item of document.querySelectorAll('#steps li')) {
      const i = STEPS.indexOf(item.dataset.step);
      item.dataset.done = String(i < at || (i === at && step === 'arrived'));
      item.dataset.current = String(i === at && step !== 'arrived');
      if (notes[item.dataset.step] !== undefined) $('.sub', item).textContent = notes[item.dataset.step];
    }
  }

  function setStatus(status, text) {
    statusPill.dataset.status = status;
    $('.text', statusPill).textContent = STATUS_LABELS[status] ?? status;
    $('#ride-status-text').textContent = text;
  }

  function resetRide() {
    if (ride) for (const s of ride.streams) s.close();
    chat.close();
    $('#chat').hidden = true;
    car?.remove();
    car = null;
    ride = null;
    nearby.setVisible(true);
    $('#driver-card').hidden = true;
    $('#steps').hidden = true;
    $('#ride-id').textContent = '–';
    requestButton.hidden = false;
    requestButton.disabled = false;
    requestButton.textContent = 'Request ride';
    cancelButton.hidden = true;
    map.root.classList.add('picking');
    drawTrip();
    setStatus('idle', 'Click the map to move the pickup and the drop-off, then request a ride.');
  }

  async function requestRide() {
    if (ride) return resetRide();
    requestButton.disabled = true;
    setStatus('requesting', 'Sending the request…');
    try {
      const created = await api('POST', '/api/rides', { token: me.token, body: { pickup: places.pickup, dropoff: places.dropoff } });
      wire.add('http', 'ride', `POST /api/rides → 201 ${created.rideId.slice(0, 8)}… ${created.status}`);
      ride = { ...created, pickup: places.pickup, dropoff: places.dropoff, streams: [], requestedAt: Date.now() };
      $('#ride-id').textContent = `${created.rideId.slice(0, 8)}…`;
      $('#ride-id').title = created.rideId;
      map.root.classList.remove('picking');
      requestButton.hidden = true;
      cancelButton.hidden = false;
      cancelButton.disabled = false;
      $('#steps').hidden = false;
      setStep('requested', { requested: `${clock()} · asking the nearest free driver`, assigned: 'the nearest free driver gets the offer', arriving: '', trip: '', arrived: '' });
      setStatus('searching', 'Finding you a driver…');
      followRide(ride);
    } catch (error) {
      wire.add('err', 'ride', `${error.code}: ${error.message}`);
      setStatus('idle', `Could not request a ride: ${error.message}`);
      requestButton.disabled = false;
    }
  }

  function followRide(current) {
    const source = new EventSource(`/api/sse/rides/${current.rideId}?token=${encodeURIComponent(current.token)}`);
    current.streams.push(source);
    watchEventSource(source, $('#ride-stream-state'));
    source.addEventListener('ride', (event) => {
      if (ride !== current) return;
      const status = JSON.parse(event.data);
      wire.add('sse', 'ride', `${status.status}${status.driverId ? ` · ${status.driverId}` : ''} (id ${event.lastEventId})`);
      onStatus(current, status);
    });
  }

  function onStatus(current, status) {
    const previous = current.status;
    current.status = status.status;
    if (status.status === 'searching') {
      setStatus('searching', 'Finding you a driver…');
    } else if (UNDER_WAY.includes(status.status)) {
      // Connecting mid-ride (a reload) starts from the current status: the driver is shown then.
      if (!UNDER_WAY.includes(previous) || current.driverId !== status.driverId) {
        const waited = ((Date.now() - current.requestedAt) / 1000).toFixed(1);
        current.driverId = status.driverId;
        setStep('assigned', { assigned: `${status.driverId}, ${waited} s after the request` });
        showDriver(current, status);
      }
      if (status.status === 'driver_assigned') {
        setStatus('driver_assigned', `${status.driverId} accepted your ride.`);
      } else if (status.status === 'driver_arrived') {
        setStatus('driver_arrived', `${status.driverId} is at the pickup.`);
        setStep('arriving', { arriving: `${clock()} · your driver is here` });
        $('#driver-distance').textContent = 'Your driver is at the pickup.';
        setApproach(null);
      } else {
        setStatus('in_progress', 'On the way to your drop-off.');
        setStep('trip', { trip: `${clock()} · on board` });
        setApproach(null);
      }
    } else if (status.status === 'completed') {
      setStatus('completed', 'You have arrived. Thanks for riding!');
      setStep('arrived', { arrived: `${clock()} · at your drop-off` });
      $('#driver-distance').textContent = 'You have arrived.';
      endRide(current, 'New ride', { keepSteps: true });
    } else if (status.status === 'no_driver') {
      setStatus('no_driver', 'No driver could take this ride. Try again, or pick another spot.');
      endRide(current, 'Try again');
    } else if (status.status === 'cancelled') {
      setStatus('cancelled', 'You cancelled this ride.');
      endRide(current, 'New ride');
    }
  }

  function endRide(current, label, { keepSteps = false } = {}) {
    // The ride stream stays open (a final status is final); the location stream ends here (the
    // origin ends it too: a tracking token works only while the ride is under way).
    for (const s of current.streams.slice(1)) s.close();
    cancelButton.hidden = true;
    requestButton.hidden = false;
    requestButton.disabled = false;
    requestButton.textContent = label;
    $('#steps').hidden = !keepSteps;
    car?.hide();
    setApproach(null);
  }

  function showDriver(current, status) {
    nearby.setVisible(false);
    $('#driver-card').hidden = false;
    $('#driver-name').textContent = status.driverId;
    $('#driver-avatar').textContent = status.driverId.slice(-2).toUpperCase();
    $('#driver-distance').textContent = 'waiting for its position…';
    car?.remove();
    car = new Marker(map, map.layers.cars, { color: 'var(--state-to_pickup)', classes: 'tracked', testid: 'driver-marker', label: status.driverId });
    let lastTs = null;
    let updates = 0;
    const source = new EventSource(`/api/sse/drivers/${status.driverId}/location?token=${encodeURIComponent(status.trackingToken)}`);
    current.streams.push(source);
    watchEventSource(source, $('#location-state'));
    source.addEventListener('location', (event) => {
      if (ride !== current) return;
      const loc = JSON.parse(event.data);
      const p = { lat: loc.lat, lng: loc.lng };
      // A position is pushed each time the driver enters a new ~50 m cell: glide over the time
      // the last step took, so that the car moves on smoothly instead of jumping cell to cell.
      const glide = lastTs === null ? 0 : Math.max(300, Math.min(8000, loc.ts - lastTs));
      lastTs = loc.ts;
      car.setHeading(loc.heading);
      car.moveTo(p, glide);
      car.node.dataset.updates = String((updates += 1));
      wire.add('sse', 'location', `${fmtLatLng(p)}${Number.isFinite(loc.speed) ? ` · ${loc.speed.toFixed(1)} m/s` : ''} (id ${event.lastEventId})`);
      // The step is the ride stream's (the driver reports it); the distances are the map's.
      const toPickup = distanceM(p, current.pickup);
      const toDropoff = distanceM(p, current.dropoff);
      const speed = loc.speed > 2 ? loc.speed : 9;
      if (current.status === 'in_progress') {
        $('#steps li[data-step="trip"] .sub').textContent = `${fmtDistance(toDropoff)} to go · ${fmtEta(toDropoff, speed)}`;
        $('#driver-distance').textContent = `Heading to your drop-off · ${fmtDistance(toDropoff)}`;
      } else if (current.status === 'driver_arrived') {
        $('#driver-distance').textContent = 'Your driver is at the pickup.';
      } else if (current.status === 'driver_assigned') {
        $('#driver-distance').textContent = `${fmtDistance(toPickup)} away · ${fmtEta(toPickup, speed)}`;
        setApproach(map.graph.route(p, current.pickup));
      }
    });
    chat.open(current.rideId, current.token);
  }

  async function cancelRide() {
    if (!ride) return;
    cancelButton.disabled = true;
    try {
      const answer = await api('DELETE', `/api/rides/${ride.rideId}`, { token: ride.token });
      wire.add('http', 'ride', `DELETE /api/rides/… → ${answer.status}`);
      onStatus(ride, answer);
    } catch (error) {
      wire.add('err', 'ride', `${error.code}: ${error.message}`);
      toast(`Could not cancel: ${error.message}`);
      cancelButton.disabled = false;
    }
  }

  requestButton.addEventListener('click', requestRide);
  cancelButton.addEventListener('click', cancelRide);
  resetRide();
  setPicking('pickup');
  document.body.dataset.ready = 'true';
}

// ---------------------------------------------------------------------------------------------
// The driver page: a human driver on the same socket protocol as the simulated ones.

const DRIVE_SPEED_MPS = 12;

async function driverPage() {
  const wire = new WireLog($('#wire-log'), $('#wire-count'));
  const city = await loadCity();
  const map = new CityMap($('#map'), city);
  const me = await mintToken('driver');
  $('#driver-id').textContent = me.sub;
  wire.add('http', 'token', `POST /demo/token → driver ${me.sub}`);
  new FleetLayer(map, { faint: true, exclude: (id) => id === me.sub }).follow();

  const onlineButton = $('#go-online');
  const offerCard = $('#offer');
  const rideCard = $('#ride');
  const driveButton = $('#auto-drive');
  const chat = new ChatPanel({ root: $('#chat'), me: 'driver', other: 'Rider', wire });
  const pickupPin = new Marker(map, map.layers.pins, { kind: 'pickup', label: 'Pickup', testid: 'pickup-marker' });
  const dropoffPin = new Marker(map, map.layers.pins, { kind: 'dropoff', label: 'Drop-off', testid: 'dropoff-marker' });
  const car = new Marker(map, map.layers.cars, { color: 'var(--accent)', classes: 'me tracked', testid: 'my-car', label: 'You' });

  const state = { online: false, offer: null, ride: null, position: null, heading: 0, lastTs: 0, sent: 0, drive: null, countdown: null };
  const seenOffers = new Set();

  // Where the driver is: somewhere central, on a street; moved by a click, a drag or "drive".
  const place = (p, ms = 0) => {
    if (state.position && distanceM(state.position, p) > 1) state.heading = bearing(state.position, p);
    state.position = { lat: round5(p.lat), lng: round5(p.lng) };
    car.setHeading(state.heading);
    car.moveTo(state.position, ms);
    $('#position').textContent = `${map.streetName(state.position)} · ${fmtLatLng(state.position)}`;
    drawRoute();
  };
  // On a ride: the way to the pickup, then to the drop-off, along the streets.
  const routeLine = map.layers.routes.appendChild(svg('polyline', { class: 'route approach' }));
  function drawRoute() {
    const ride = state.ride;
    const target = ride && (ride.phase === 'to_pickup' ? ride.pickup : ride.dropoff);
    routeLine.setAttribute('points', target && !ride.arrived ? pointsAttr(map, map.graph.route(state.position, target)) : '');
  }
  place(
    map.snap({
      lat: city.center.lat + (Math.random() - 0.5) * (city.bounds.north - city.bounds.south) * 0.4,
      lng: city.center.lng + (Math.random() - 0.5) * (city.bounds.east - city.bounds.west) * 0.4,
    }),
  );

  map.onClick((p) => {
    stopDriving();
    place(map.snap(p), 250);
  });
  let dragging = false;
  car.node.addEventListener('pointerdown', (e) => {
    dragging = true;
    stopDriving();
    car.node.classList.add('dragging');
    map.root.setPointerCapture(e.pointerId);
  });
  map.root.addEventListener('pointermove', (e) => {
    if (dragging) place(map.unproject(map.eventPoint(e)));
  });
  map.root.addEventListener('pointerup', () => {
    if (!dragging) return;
    dragging = false;
    car.node.classList.remove('dragging');
    place(map.snap(state.position), 150);
  });

  // The socket, reconnecting with backoff; an offer still pending comes again on reconnect.
  let socket = null;
  let backoff = 500;
  const send = (frame) => {
    if (socket?.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(frame));
    if (frame.type !== 'location') wire.add('ws', 'rides ↑', JSON.stringify(frame));
    return true;
  };
  function connect() {
    socket = new WebSocket(wsUrl(`/ws/rides?token=${encodeURIComponent(me.token)}`));
    setDot($('#socket-state'), 'connecting');
    socket.onopen = () => {
      backoff = 500;
      setDot($('#socket-state'), 'open');
      wire.add('ws', 'rides', 'connected');
      onlineButton.disabled = false;
      if (state.online) {
        sendLocation();
        send({ type: 'availability', available: true });
      }
    };
    socket.onmessage = (event) => onFrame(JSON.parse(event.data));
    socket.onclose = (event) => {
      setDot($('#socket-state'), 'connecting');
      wire.add('err', 'rides', `closed (${event.code}); reconnecting`);
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 8000);
    };
  }

  function sendLocation() {
    // ts must grow strictly: a fix whose ts is not newer than the last is dropped as stale.
    const ts = Math.max(Date.now(), state.lastTs + 1);
    const fix = { type: 'location', lat: state.position.lat, lng: state.position.lng, heading: Math.round(state.heading) % 360, ts };
    if (state.drive) fix.speed = DRIVE_SPEED_MPS;
    if (send(fix)) {
      state.lastTs = ts;
      state.sent += 1;
      $('#fixes-sent').textContent = fmtInt(state.sent);
    }
  }
  // A GPS fix every second while online or on a ride, as a driver's app sends them.
  setInterval(() => {
    if (state.online || state.ride) sendLocation();
  }, 1000);

  function setOnline(online) {
    state.online = online;
    // Going online places the driver at the last location sent on this socket: send one first.
    if (online) sendLocation();
    send({ type: 'availability', available: online });
    onlineButton.textContent = online ? 'Go offline' : 'Go online';
    onlineButton.className = online ? 'secondary' : 'success';
    render();
  }
  onlineButton.addEventListener('click', () => setOnline(!state.online));

  function render() {
    let status = 'offline';
    let text = 'Offline: go online to receive ride offers.';
    if (state.ride) {
      status = 'on_ride';
      text = state.ride.phase === 'to_pickup' ? 'On a ride: drive to the pickup.' : 'On a ride: drive to the drop-off.';
    } else if (state.offer) {
      status = 'offered';
      text = 'A rider wants you: answer before the countdown ends.';
    } else if (state.online) {
      status = 'online';
      text = 'Online: waiting for an offer. Offers go to the nearest free driver first.';
    }
    const pill = $('#driver-status');
    pill.dataset.status = status;
    $('.text', pill).textContent = { offline: 'Offline', online: 'Online', offered: 'Offer', on_ride: 'On a ride' }[status];
    $('#driver-status-text').textContent = text;
  }

  function onFrame(frame) {
    if (frame.type === 'offer') onOffer(frame);
    else if (frame.type === 'offer_result') onResult(frame);
    else if (frame.type === 'ride_progress_result') {
      wire.add('ws', 'rides ↓', `ride_progress_result ${frame.status} ${frame.result}`);
      if (frame.result !== 'ok') toast(`The ride could not go to ${frame.status}: ${frame.result}`);
    } else if (frame.type === 'error') {
      wire.add('err', 'rides ↓', `${frame.code}: ${frame.message}`);
      toast(`Server: ${frame.message}`);
    }
  }

  function onOffer(offer) {
    // Offers are resent until acknowledged, and again on reconnect: one card per offerId.
    if (seenOffers.has(offer.offerId)) return;
    seenOffers.add(offer.offerId);
    wire.add('ws', 'rides ↓', `offer ${offer.offerId} (ride ${offer.rideId.slice(0, 8)}…)`);
    send({ type: 'offer_ack', offerId: offer.offerId });
    state.offer = offer;
    offerCard.hidden = false;
    offerCard.dataset.offerId = offer.offerId;
    $('#offer-result').hidden = true;
    $('#offer-result').dataset.result = '';
    $('#offer-accept').disabled = false;
    $('#offer-reject').disabled = false;
    $('#offer-pickup').textContent = `${map.streetName(offer.pickup)} · ${fmtDistance(distanceM(state.position, offer.pickup))} from you`;
    $('#offer-dropoff').textContent = `${map.streetName(offer.dropoff)} · a ${fmtDistance(distanceM(offer.pickup, offer.dropoff))} trip`;
    pickupPin.moveTo(offer.pickup);
    dropoffPin.moveTo(offer.dropoff);
    const total = Math.max(1000, offer.expiresAt - Date.now());
    clearInterval(state.countdown);
    const tick = () => {
      const left = Math.max(0, offer.expiresAt - Date.now());
      $('#offer-countdown-bar').style.width = `${(100 * left) / total}%`;
      $('#offer-countdown').textContent = `${(left / 1000).toFixed(1)} s`;
      if (left === 0) clearInterval(state.countdown);
    };
    tick();
    state.countdown = setInterval(tick, 100);
    render();
  }

  function answer(type) {
    const offer = state.offer;
    if (!offer) return;
    $('#offer-accept').disabled = true;
    $('#offer-reject').disabled = true;
    send({ type, offerId: offer.offerId });
    if (type === 'reject') {
      showResult('rejected', 'You turned it down.');
      closeOffer(offer);
    } else {
      showResult('waiting', 'Accepted: waiting for confirmation…');
    }
  }
  $('#offer-accept').addEventListener('click', () => answer('accept'));
  $('#offer-reject').addEventListener('click', () => answer('reject'));

  function showResult(result, text) {
    const node = $('#offer-result');
    node.hidden = false;
    node.dataset.result = result;
    node.dataset.status = result;
    $('.text', node).textContent = text;
  }

  function closeOffer(offer, delay = 2500) {
    clearInterval(state.countdown);
    if (state.offer === offer) state.offer = null;
    setTimeout(() => {
      if (offerCard.dataset.offerId === offer.offerId && !state.offer) {
        offerCard.hidden = true;
        if (!state.ride) {
          pickupPin.hide();
          dropoffPin.hide();
        }
      }
    }, delay);
    render();
  }

  const RESULTS = {
    confirmed: 'Confirmed: the ride is yours.',
    expired: 'Expired: the time to answer ran out.',
    taken: 'Taken by another driver.',
    cancelled: 'The rider cancelled.',
  };

  function onResult({ offerId, result }) {
    wire.add('ws', 'rides ↓', `offer_result ${result}`);
    const offer = state.offer?.offerId === offerId ? state.offer : null;
    if (!offer) {
      if (result !== 'confirmed') toast(RESULTS[result] ?? result);
      return;
    }
    showResult(result, RESULTS[result] ?? result);
    closeOffer(offer, result === 'confirmed' ? 1500 : 3000);
    if (result === 'confirmed') startRide(offer);
  }

  function startRide(offer) {
    state.ride = { ...offer, phase: 'to_pickup' };
    rideCard.hidden = false;
    $('#ride-id').textContent = `${offer.rideId.slice(0, 8)}…`;
    driveButton.textContent = 'Drive to the pickup';
    driveButton.disabled = false;
    chat.open(offer.rideId, me.token);
    drawRoute();
    render();
  }

  function stopDriving() {
    if (state.drive) {
      clearInterval(state.drive);
      state.drive = null;
      driveButton.disabled = false;
    }
  }

  // Drives along the streets to the pickup, then (pressed again) to the drop-off.
  driveButton.addEventListener('click', () => {
    const ride = state.ride;
    if (!ride) return;
    stopDriving();
    // Pressed again at the pickup: the rider is on board.
    if (ride.phase === 'to_dropoff' && !ride.onBoard) {
      ride.onBoard = true;
      send({ type: 'ride_progress', rideId: ride.rideId, status: 'in_progress' });
    }
    const path = map.graph.route(state.position, ride.phase === 'to_pickup' ? ride.pickup : ride.dropoff);
    const tickMs = 200;
    let leg = 1;
    driveButton.disabled = true;
    state.drive = setInterval(() => {
      let budget = (DRIVE_SPEED_MPS * tickMs) / 1000;
      let here = state.position;
      while (leg < path.length && budget > 0) {
        const d = distanceM(here, path[leg]);
        if (d <= budget) {
          budget -= d;
          here = path[leg];
          leg += 1;
        } else {
          const f = budget / d;
          here = { lat: here.lat + (path[leg].lat - here.lat) * f, lng: here.lng + (path[leg].lng - here.lng) * f };
          budget = 0;
        }
      }
      place(here, tickMs);
      if (leg < path.length) return;
      stopDriving();
      if (ride.phase === 'to_pickup') {
        ride.phase = 'to_dropoff';
        send({ type: 'ride_progress', rideId: ride.rideId, status: 'arrived' });
        driveButton.textContent = 'Rider on board: drive to the drop-off';
        pickupPin.hide();
      } else {
        ride.arrived = true;
        driveButton.textContent = 'Arrived';
        driveButton.disabled = true;
      }
      drawRoute();
      render();
    }, tickMs);
  });

  // `completed` ends the ride for the rider and frees the driver for offers (v1.1 lifecycle).
  $('#finish-ride').addEventListener('click', () => {
    stopDriving();
    if (state.ride) send({ type: 'ride_progress', rideId: state.ride.rideId, status: 'completed' });
    state.ride = null;
    rideCard.hidden = true;
    chat.close();
    $('#chat').hidden = true;
    pickupPin.hide();
    dropoffPin.hide();
    drawRoute();
    setOnline(true);
  });

  onlineButton.disabled = true;
  render();
  connect();
  document.body.dataset.ready = 'true';
}

// ---------------------------------------------------------------------------------------------
// The fleet page: every simulated driver and the origin's own counters.

const COUNTERS = [
  ['driverConnections', 'Driver sockets', false],
  ['riderStreams', 'Rider streams', false],
  ['eventsPushed', 'Events pushed', true],
  ['updatesReceived', 'Locations received', true],
  ['updatesPublished', 'Locations published', true],
  ['chatConnections', 'Chat sockets', false],
  ['ridesCreated', 'Rides requested', false],
  ['ridesAssigned', 'Rides assigned', false],
  ['offersSent', 'Offers sent', false],
  ['offersExpired', 'Offers expired', false],
];
const FLEET_STATES = ['free', 'offered', 'to_pickup', 'to_dropoff', 'offline'];

async function fleetPage() {
  const city = await loadCity();
  const map = new CityMap($('#map'), city);
  const cells = {};
  for (const [key, name, rated] of COUNTERS) {
    const value = el('div', { class: 'value', 'data-testid': `counter-${key}` }, '–');
    const rate = el('div', { class: 'rate' }, rated ? '– /s' : '\u00a0');
    $('#counters').append(el('div', { class: 'stat' }, el('div', { class: 'name' }, name), value, rate));
    cells[key] = { value, rate, rated };
  }
  const stateCount = {};
  for (const s of FLEET_STATES) {
    stateCount[s] = el('span', { class: 'n', 'data-testid': `state-count-${s}` }, '0');
    $('#states').append(el('div', { class: 'state-row' }, el('span', { class: 'swatch', style: `background: ${stateColor(s)}` }), el('span', {}, STATE_LABELS[s]), stateCount[s]));
  }
  const history = [];
  let previous = null;

  new FleetLayer(map, {
    onUpdate(snapshot) {
      const c = snapshot.counters ?? {};
      const dt = previous ? (snapshot.ts - previous.ts) / 1000 : 0;
      const rate = (key) => (c[key] - (previous?.counters?.[key] ?? 0)) / dt;
      for (const [key, cell] of Object.entries(cells)) {
        cell.value.textContent = fmtInt(c[key]);
        if (cell.rated && dt > 0) cell.rate.textContent = `${rate(key).toFixed(1)} /s`;
      }
      // The grid-cell filter: what the drivers sent against what was worth pushing.
      const received = c.updatesReceived ?? 0;
      const suppressed = c.updatesSuppressed ?? 0;
      const share = received > 0 ? (100 * suppressed) / received : 0;
      $('#suppressed').textContent = fmtInt(suppressed);
      $('#suppressed-bar').style.width = `${share.toFixed(1)}%`;
      $('#suppressed-share').textContent =
        received > 0 ? `${share.toFixed(0)}% of ${fmtInt(received)} locations stayed inside their ~50 m cell: stored, not pushed` : 'no locations yet';

      const counts = Object.fromEntries(FLEET_STATES.map((s) => [s, 0]));
      for (const d of snapshot.drivers ?? []) counts[d.state in counts ? d.state : 'offline'] += 1;
      for (const s of FLEET_STATES) stateCount[s].textContent = String(counts[s]);
      $('#fleet-count').textContent = String(snapshot.drivers?.length ?? 0);

      const surge = c.surge?.downtown;
      if (surge !== undefined) {
        showSurge($('#surge-badge'), surge);
        map.setSurge('downtown', surge);
      }
      if (dt > 0) {
        history.push(Math.max(0, rate('eventsPushed')));
        if (history.length > 60) history.shift();
        drawSpark($('#spark'), history);
      }
      previous = snapshot;
      $('#updated').textContent = clock(snapshot.ts);
      document.body.dataset.ready = 'true';
    },
  }).follow($('#fleet-state'));
}

function drawSpark(node, values) {
  const max = Math.max(1, ...values);
  const [w, h] = [100, 30];
  const step = values.length > 1 ? w / (values.length - 1) : w;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(h - (v / max) * (h - 2) - 1).toFixed(1)}`);
  node.replaceChildren(
    svg('polygon', { points: `0,${h} ${points.join(' ')} ${((values.length - 1) * step).toFixed(1)},${h}` }),
    svg('polyline', { points: points.join(' ') }),
  );
  $('#spark-max').textContent = `now ${values[values.length - 1].toFixed(1)} /s · peak ${max.toFixed(1)} /s`;
}

// ---------------------------------------------------------------------------------------------
// The index page: a live line of numbers under the title.

function homePage() {
  new EventSource('/demo/sse/fleet').addEventListener('fleet', (event) => {
    const snapshot = JSON.parse(event.data);
    const c = snapshot.counters ?? {};
    $('#live').hidden = false;
    $('#live-drivers').textContent = fmtInt((snapshot.drivers ?? []).filter((d) => d.state !== 'offline').length);
    $('#live-pushed').textContent = fmtInt(c.eventsPushed);
    $('#live-rides').textContent = fmtInt(c.ridesCreated);
    $('#live-surge').textContent = fmtMult(c.surge?.downtown ?? 1);
  });
  document.body.dataset.ready = 'true';
}

// ---------------------------------------------------------------------------------------------

const PAGES = { rider: riderPage, driver: driverPage, fleet: fleetPage, home: homePage };

async function main() {
  const page = PAGES[document.body.dataset.page];
  if (!page) return;
  try {
    await page();
  } catch (error) {
    console.error(error);
    document.body.dataset.error = String(error?.message ?? error);
    const banner = $('#fatal');
    if (banner) {
      banner.hidden = false;
      banner.textContent = `The demo could not start: ${error?.message ?? error}. Is the origin running in dev mode (no RIDECAST_TOKEN_SECRET)?`;
    }
  }
}

main();
