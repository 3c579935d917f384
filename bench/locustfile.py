"""Locust load for a Ridecast origin, for teams that already use Locust.

Three kinds of user, all against one origin (``--host http://127.0.0.1:8080``):

* ``StreamingRider`` follows a driver over SSE (``/api/sse/drivers/{id}/location``) with
  ``requests`` streaming, and records every location event's latency, now minus its ``ts`` (the
  driver's send time), as a custom ``SSE`` request named ``location latency``. The value sent at
  once on connect is older than the stream, so it is counted as ``current value on connect``.
* ``PollingRider`` asks ``GET /api/drivers/{id}/location`` every 2 s with ``If-None-Match``
  (200, 304, and 404 while the driver has sent nothing, are all answers, not failures), and
  records the age of each new location as ``poll: age of a new location``.
* ``Driver`` holds a driver WebSocket (``/ws/rides``, ``websocket-client``), sends a location
  every second (each in a new ~50 m grid cell, so the origin pushes every one), answers pings
  and counts error frames.

Tokens are minted with PyJWT from ``RIDECAST_TOKEN_SECRET`` (the origin's dev secret when
unset). Settings, all optional:

* ``RIDECAST_DRIVERS`` (2): how many ``Driver`` users run; riders follow one of them each.
* ``RIDECAST_ID_PREFIX`` (``locust``): prefix of driver and rider ids; workers of one
  distributed run must share it.
* ``RIDECAST_SEND_INTERVAL`` (1.0) and ``RIDECAST_POLL_INTERVAL`` (2.0), in seconds.

Run: ``pip install locust websocket-client PyJWT`` then
``locust -f bench/locustfile.py --headless -u 20 -r 10 -t 60s --host http://127.0.0.1:8080``.
Latency from ``ts`` needs the riders and the drivers to share a clock: run them on one machine
(or on machines whose clocks agree to the millisecond); Locust reports it to the millisecond.
"""

import contextlib
import itertools
import json
import os
import time

import gevent
import jwt
import websocket
from locust import HttpUser, User, constant, constant_pacing, events, task

SECRET = os.environ.get("RIDECAST_TOKEN_SECRET") or "ridecast-dev-secret"
DRIVERS = max(1, int(os.environ.get("RIDECAST_DRIVERS", "2")))
PREFIX = os.environ.get("RIDECAST_ID_PREFIX", "locust")
SEND_INTERVAL = float(os.environ.get("RIDECAST_SEND_INTERVAL", "1.0"))
POLL_INTERVAL = float(os.environ.get("RIDECAST_POLL_INTERVAL", "2.0"))
TOKEN_TTL_SECS = 6 * 3600

# Grid cells are 0.00045 degrees of latitude; 1.5 cells per update changes cell every time.
CELL_DEGREES = 0.00045

_driver_numbers = itertools.count()
_rider_numbers = itertools.count()


def driver_id(n):
    return f"{PREFIX}-d{n % DRIVERS}"


def mint(sub, role, drv=None):
    claims = {"sub": sub, "role": role, "exp": int(time.time()) + TOKEN_TTL_SECS}
    if drv is not None:
        claims["drv"] = drv
    return jwt.encode(claims, SECRET, algorithm="HS256")


def now_ms():
    return time.time() * 1000.0


def record(request_type, name, response_time, length=0, exception=None):
    """Reports a measurement that is not a plain HTTP request (Locust's custom-event hook)."""
    events.request.fire(
        request_type=request_type,
        name=name,
        response_time=response_time,
        response_length=length,
        exception=exception,
        context={},
    )


class SseParser:
    """Incremental Server-Sent Events parser: bytes in, (event, id, data) out.

    Handles events split across reads, CRLF/LF/CR line ends, comments and multi-line data.
    """

    def __init__(self):
        self._buffer = b""
        self._event = ""
        self._id = None
        self._data = []

    def feed(self, chunk):
        self._buffer += chunk
        out = []
        while True:
            ends = [i for i in (self._buffer.find(b"\n"), self._buffer.find(b"\r")) if i >= 0]
            if not ends:
                return out
            end = min(ends)
            # A CR at the very end may be the first half of CRLF: wait for the next byte.
            if self._buffer[end : end + 1] == b"\r" and end + 1 == len(self._buffer):
                return out
            line = self._buffer[:end].decode("utf-8", "replace")
            skip = 2 if self._buffer[end : end + 2] == b"\r\n" else 1
            self._buffer = self._buffer[end + skip :]
            event = self._line(line)
            if event is not None:
                out.append(event)

    def _line(self, line):
        if line == "":
            if not self._data:
                self._event, self._id = "", None
                return None
            event = (self._event or "message", self._id, "\n".join(self._data))
            self._event, self._id, self._data = "", None, []
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            self._id = value
        return None


class StreamingRider(HttpUser):
    """Follows one driver over SSE and records each event's latency from its ``ts``."""

    weight = 8
    # Time before reconnecting when the server ends the stream.
    wait_time = constant(1)

    def on_start(self):
        n = next(_rider_numbers)
        self.rider = f"{PREFIX}-sse{n}"
        self.driver = driver_id(n)
        self.token = mint(self.rider, "rider", drv=self.driver)
        self.last_event_id = None

    @task
    def follow(self):
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        opened = now_ms()
        # Recorded by Locust as soon as the response head arrives: the time to open the stream
        # (any status but 200 counts as a failure).
        response = self.client.get(
            f"/api/sse/drivers/{self.driver}/location",
            headers=headers,
            stream=True,
            timeout=(10, 60),
            name="/api/sse/drivers/[id]/location",
        )
        try:
            if response.status_code != 200:
                return
            parser = SseParser()
            raw = response.raw
            while True:
                # read1 returns what has arrived (at most one read), so an event is handled
                # as soon as its bytes are here, whether the body is chunked or not.
                try:
                    chunk = raw.read1(4096) if hasattr(raw, "read1") else raw.read(1)
                except Exception as e:  # noqa: BLE001 - a broken or silent stream
                    record("SSE", "stream broken", now_ms() - opened, exception=e)
                    return
                if not chunk:
                    return
                received = now_ms()
                for name, event_id, data in parser.feed(chunk):
                    self._on_event(name, event_id, data, received, opened, len(chunk))
        finally:
            response.close()

    def _on_event(self, name, event_id, data, received, opened, length):
        if name != "location":
            return
        try:
            ts = json.loads(data)["ts"]
        except (ValueError, KeyError, TypeError) as e:
            record("SSE", "location (unreadable)", 0, exception=e)
            return
        if event_id:
            self.last_event_id = event_id
        if ts < opened:
            record("SSE", "current value on connect", max(0.0, received - ts), length)
        else:
            record("SSE", "location latency", max(0.0, received - ts), length)


class PollingRider(HttpUser):
    """Asks for the driver's location every 2 s with ``If-None-Match``, like the legacy app."""

    weight = 4
    wait_time = constant_pacing(POLL_INTERVAL)

    def on_start(self):
        n = next(_rider_numbers)
        self.rider = f"{PREFIX}-poll{n}"
        self.driver = driver_id(n)
        self.token = mint(self.rider, "rider", drv=self.driver)
        self.etag = None
        self.last_ts = 0

    @task
    def poll(self):
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.etag:
            headers["If-None-Match"] = self.etag
        with self.client.get(
            f"/api/drivers/{self.driver}/location",
            headers=headers,
            name="/api/drivers/[id]/location",
            catch_response=True,
        ) as response:
            if response.status_code == 200:
                response.success()
                self.etag = response.headers.get("ETag", self.etag)
                try:
                    ts = response.json()["ts"]
                except (ValueError, KeyError, TypeError) as e:
                    response.failure(f"unreadable location: {e}")
                    return
                if ts > self.last_ts:
                    self.last_ts = ts
                    record("poll", "poll: age of a new location", max(0.0, now_ms() - ts))
            elif response.status_code in (304, 404):
                response.success()
            else:
                response.failure(f"HTTP {response.status_code}")


class Driver(User):
    """A driver WebSocket sending one location per interval, each in a new grid cell."""

    fixed_count = DRIVERS
    wait_time = constant_pacing(SEND_INTERVAL)

    def on_start(self):
        self.number = next(_driver_numbers)
        self.driver = driver_id(self.number)
        self.step = 0
        self.last_ts = 0
        self.ws = None
        self.reader = None
        self._connect()

    def _connect(self):
        url = self.host.replace("http://", "ws://", 1).replace("https://", "wss://", 1).rstrip("/") + "/ws/rides"
        started = now_ms()
        try:
            self.ws = websocket.create_connection(
                url,
                header=[f"Authorization: Bearer {mint(self.driver, 'driver')}"],
                timeout=10,
                enable_multithread=True,
            )
        except Exception as e:  # noqa: BLE001 - every failure is a failed connect
            record("WS", "/ws/rides connect", now_ms() - started, exception=e)
            self.ws = None
            return
        record("WS", "/ws/rides connect", now_ms() - started)
        # Reading answers the server's pings (websocket-client replies on recv) and shows errors.
        self.reader = gevent.spawn(self._read, self.ws)

    def _read(self, ws):
        while True:
            try:
                text = ws.recv()
            except Exception:  # noqa: BLE001 - closed, by us or by the server
                return
            if isinstance(text, str) and '"error"' in text:
                record("WS", "error frame", 0, len(text), exception=Exception(text[:200]))

    def _fix(self):
        lat0 = 37.60 + (self.number % 200) * 0.002
        lng = -122.50 + (self.number // 200 % 200) * 0.002
        lat = lat0 + (self.step % 1000) * CELL_DEGREES * 1.5 + CELL_DEGREES / 2
        self.step += 1
        ts = max(int(now_ms()), self.last_ts + 1)
        self.last_ts = ts
        speed = CELL_DEGREES * 1.5 * 111_320 / SEND_INTERVAL
        return {"type": "location", "lat": lat, "lng": lng, "heading": 0.0, "speed": round(speed, 1), "ts": ts}

    @task
    def send_location(self):
        if self.ws is None or not self.ws.connected:
            self._connect()
            if self.ws is None:
                return
        frame = json.dumps(self._fix())
        started = now_ms()
        try:
            self.ws.send(frame)
        except Exception as e:  # noqa: BLE001 - a failed send is a failed request
            record("WS", "location send", now_ms() - started, len(frame), exception=e)
            self.ws = None
            return
        record("WS", "location send", now_ms() - started, len(frame))

    def on_stop(self):
        if self.ws is not None:
            # Closing a socket the server already closed may fail; nothing is left to do then.
            with contextlib.suppress(Exception):
                self.ws.close()
        if self.reader is not None:
            self.reader.kill(block=False)
