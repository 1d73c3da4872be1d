"""Status server on 127.0.0.1, ephemeral port: health, Prometheus metrics, detections."""
import calendar
import http.client
import json
import re
import select
import socket
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from edge.detections import Detections
from edge.errors import EdgeError
from edge.http import (PROMETHEUS_CONTENT_TYPE, EdgeHttpServer, LiveStatus, format_metrics, parse_detections_query,
                       read_thermal_zones_c)
from edge.store import Store

# Zone names as a Jetson Nano (L4T R32) lists them; values in millidegrees C.
NANO_ZONES = [("AO-therm", "40500"), ("CPU-therm", "35000"), ("GPU-therm", "33500"), ("PLL-therm", "33000"),
              ("PMIC-Die", "100000"), ("thermal-fan-est", "34400")]


def make_thermal_root(tmp_path, zones=NANO_ZONES):
    root = tmp_path / "root"
    for i, (kind, temp) in enumerate(zones):
        zone = root / "sys" / "class" / "thermal" / "thermal_zone{}".format(i)
        zone.mkdir(parents=True)
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(temp + "\n")
    return root


class Clock(object):
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def get(server, path):
    url = "http://{}:{}{}".format(server.address[0], server.address[1], path)
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode("utf-8")


def test_thermal_reader(tmp_path):
    root = make_thermal_root(tmp_path, NANO_ZONES + [("broken", "not a number")])
    zones = read_thermal_zones_c(str(root))
    assert zones["thermal_zone1"] == ("CPU-therm", 35.0)
    assert zones["thermal_zone5"] == ("thermal-fan-est", 34.4)
    assert "thermal_zone6" not in zones
    assert read_thermal_zones_c(str(tmp_path / "nothing")) == {}


def test_live_status_histogram_is_cumulative():
    status = LiveStatus(buckets_s=(0.1, 1.0))
    for latency in (0.05, 0.5, 0.5, 3.0):
        status.record_frame(latency_s=latency, n_detections=2)
    status.record_frame(skipped=True)
    snap = status.snapshot()
    assert snap["latency_buckets"] == [(0.1, 1), (1.0, 3)]
    assert snap["latency_count"] == 4 and snap["latency_sum_s"] == pytest.approx(4.05)
    assert (snap["frames_total"], snap["frames_skipped"], snap["detections_total"]) == (5, 1, 8)
    with pytest.raises(EdgeError, match="watts"):
        status.set(watts=3)


def parse_prometheus(text):
    """{(name, labels): value} and {name: type}, checking each line's syntax."""
    samples, types = {}, {}
    for line in text.strip().split("\n"):
        if line.startswith("# TYPE"):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("# HELP"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$', line)
        assert m, line
        samples[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return samples, types


def test_format_metrics():
    status = LiveStatus(profiles=["single", "ensemble"], buckets_s=(0.5,))
    status.record_frame(latency_s=0.2)
    status.record_frame(latency_s=0.7)
    status.set(power_w=4.25, energy_today_wh=1.5, budget_left_wh=12.9, profile="ensemble")
    text = format_metrics(status.snapshot(), {"thermal_zone1": ('CPU"therm', 35.0)}, heartbeat_age_s=2.0)
    samples, types = parse_prometheus(text)
    assert samples[("reefwatch_frames_total", "")] == 2
    assert samples[("reefwatch_frame_latency_seconds_bucket", '{le="0.5"}')] == 1
    assert samples[("reefwatch_frame_latency_seconds_bucket", '{le="+Inf"}')] == 2
    assert samples[("reefwatch_frame_latency_seconds_sum", "")] == pytest.approx(0.9)
    assert samples[("reefwatch_power_watts", "")] == 4.25
    assert samples[("reefwatch_budget_left_wh", "")] == 12.9
    assert samples[("reefwatch_profile", '{profile="ensemble"}')] == 1
    assert samples[("reefwatch_profile", '{profile="single"}')] == 0
    assert samples[("reefwatch_temperature_celsius", '{zone="thermal_zone1",type="CPU\\"therm"}')] == 35.0
    assert types["reefwatch_frame_latency_seconds"] == "histogram"
    assert types["reefwatch_frames_total"] == "counter" and types["reefwatch_power_watts"] == "gauge"


def test_unknown_gauges_are_left_out():
    samples, _ = parse_prometheus(format_metrics(LiveStatus().snapshot()))
    assert ("reefwatch_power_watts", "") not in samples
    assert not any(name == "reefwatch_profile" for name, _ in samples)


def test_skipped_frames_are_counted_per_reason():
    status = LiveStatus(skip_reasons=("corrupt", "budget", "failed"))
    reasons = ["budget", "corrupt", "budget", "failed", "thermal"]
    for reason in reasons:
        status.record_frame(skipped=True, reason=reason)
    status.record_frame(latency_s=0.1, n_detections=2)
    status.record_frame(latency_s=0.2, retried=True)  # a frame run again: not a new frame
    snap = status.snapshot()
    expected = [(r, reasons.count(r)) for r in ("corrupt", "budget", "failed", "thermal")]
    assert snap["frames_skipped_by_reason"] == expected
    assert (snap["frames_total"], snap["frames_skipped"], snap["frames_retried"]) == (len(reasons) + 1, len(reasons), 1)
    samples, types = parse_prometheus(format_metrics(snap))
    for reason, count in expected:
        assert samples[("reefwatch_frames_skipped_total", '{reason="%s"}' % reason)] == count
    assert ("reefwatch_frames_skipped_total", "") not in samples
    assert samples[("reefwatch_frames_retried_total", "")] == 1
    assert types["reefwatch_frames_skipped_total"] == "counter"


def test_every_known_skip_reason_is_exported_from_zero():
    samples, _ = parse_prometheus(format_metrics(LiveStatus().snapshot()))
    assert {labels for name, labels in samples if name == "reefwatch_frames_skipped_total"} == {
        '{reason="corrupt"}', '{reason="budget"}', '{reason="failed"}'}
    assert all(v == 0 for (name, _), v in samples.items() if name == "reefwatch_frames_skipped_total")


def test_a_snapshot_without_reasons_keeps_the_plain_total():
    snap = LiveStatus().snapshot()
    del snap["frames_skipped_by_reason"]
    snap["frames_skipped"] = 4
    samples, _ = parse_prometheus(format_metrics(snap))
    assert samples[("reefwatch_frames_skipped_total", "")] == 4


@pytest.mark.parametrize("query, expected", [
    ("", (None, None, 1000)),
    ("since=12", (None, 12, 1000)),
    ("since=1717243200.5&limit=10", (1717243200.5, None, 10)),
    ("limit=999999", (None, None, 5000)),
])
def test_parse_detections_query(query, expected):
    assert parse_detections_query(query) == expected


# The first second of year 10000, computed independently of the code's constant.
YEAR_10000_S = calendar.timegm((9999, 12, 31, 0, 0, 0)) + 86400.0


@pytest.mark.parametrize("query, expected", [
    ("since=%r" % (YEAR_10000_S - 1.0), (YEAR_10000_S - 1.0, None, 1000)),
    ("limit=1e300", (None, None, 5000)),  # a huge but finite limit is clamped, as any limit over the cap
])
def test_parse_detections_query_bounds(query, expected):
    assert parse_detections_query(query) == expected


# Regression (issue 8): since=inf was a 200 with no rows, huge values passed through to SQLite.
@pytest.mark.parametrize("query, key", [
    ("since=abc", "since"), ("since=-1", "since"), ("from=3", "from"),
    ("since=inf", "since"), ("since=-inf", "since"), ("since=nan", "since"), ("since=Infinity", "since"),
    ("since=1e400", "since"), ("since=1e300", "since"), ("since=%r" % YEAR_10000_S, "since"),
    ("limit=inf", "limit"), ("limit=-inf", "limit"), ("limit=nan", "limit"), ("limit=1e400", "limit"),
    ("limit=-1", "limit"), ("since=12&limit=", "limit"),
])
def test_parse_detections_query_rejects(query, key):
    with pytest.raises(EdgeError, match=key):
        parse_detections_query(query)


def start_server(tmp_path, status, detections, clock, **limits):
    return EdgeHttpServer(status, detections, port=0, heartbeat_max_age_s=30.0,
                          thermal_root=str(make_thermal_root(tmp_path)), clock=clock, **limits).start()


@pytest.fixture
def served(tmp_path):
    clock = Clock()
    status = LiveStatus(profiles=["single", "cascade"], clock=clock)
    store = Store(str(tmp_path / "rw.sqlite"))
    server = start_server(tmp_path, status, store.detections_since, clock)
    yield server, status, store, clock
    server.stop()
    store.close()


def test_server_binds_localhost_ephemeral_port(served):
    server = served[0]
    assert server.address[0] == "127.0.0.1" and server.address[1] > 0


def test_healthz_follows_heartbeat_age(served):
    server, status, _, clock = served
    code, ctype, body = get(server, "/healthz")
    assert code == 503 and json.loads(body)["status"] == "stalled"  # never beat yet
    status.beat()
    clock.t += 29.0
    code, ctype, body = get(server, "/healthz")
    assert code == 200 and ctype == "application/json"
    assert json.loads(body)["heartbeat_age_s"] == pytest.approx(29.0)
    clock.t += 2.0
    assert get(server, "/healthz")[0] == 503


def test_metrics_endpoint(served):
    server, status, _, _ = served
    status.beat()
    status.set(profile="cascade", power_w=3.5)
    status.record_frame(latency_s=0.3)
    code, ctype, body = get(server, "/metrics")
    assert code == 200 and ctype == PROMETHEUS_CONTENT_TYPE
    samples, _ = parse_prometheus(body)
    assert samples[("reefwatch_temperature_celsius", '{zone="thermal_zone1",type="CPU-therm"}')] == 35.0
    assert samples[("reefwatch_profile", '{profile="cascade"}')] == 1
    assert samples[("reefwatch_heartbeat_age_seconds", "")] == 0.0


def test_detections_endpoint(served):
    server, _, store, _ = served
    t0 = 1717243200.0
    for k in range(3):
        store.record_frame(t0 + k, "csi:0", k, Detections(np.array([[1, 2, 3, 4]], np.float32), [0.8], [k]))
    code, _, body = get(server, "/detections?since=0")
    data = json.loads(body)
    assert code == 200 and [d["class_id"] for d in data["detections"]] == [0, 1, 2]
    assert data["next_since"] == data["detections"][-1]["id"]
    first_id = data["detections"][0]["id"]
    after_first = json.loads(get(server, "/detections?since=%d" % first_id)[2])["detections"]
    assert [d["frame_id"] for d in after_first] == [1, 2]
    by_time = json.loads(get(server, "/detections?since=%f" % (t0 + 1.5))[2])["detections"]
    assert [d["frame_id"] for d in by_time] == [2]
    code, _, body = get(server, "/detections?since=yesterday")
    assert code == 400 and "yesterday" in json.loads(body)["error"]


def test_unknown_path_and_handler_error(served, caplog):
    server, status, _, _ = served
    assert get(server, "/nope")[0] == 404
    server.detections = lambda *a: 1 / 0
    with caplog.at_level("ERROR", logger="edge.http"):
        code, _, body = get(server, "/detections")
    assert code == 500 and "division" in json.loads(body)["error"]
    assert get(server, "/healthz")[0] in (200, 503)  # the server survives


def test_port_in_use_raises(served):
    server = served[0]
    other = EdgeHttpServer(LiveStatus(), host="127.0.0.1", port=server.address[1])
    with pytest.raises(EdgeError, match="cannot serve HTTP"):
        other.start()


def test_detections_endpoint_rejects_non_finite_since(served):
    server = served[0]
    for value in ("inf", "nan", "-inf", "1e300"):
        code, ctype, body = get(server, "/detections?since=" + value)
        assert (code, ctype) == (400, "application/json"), value
        assert "since" in json.loads(body)["error"] and value in json.loads(body)["error"]


def request(server, method, path):
    conn = http.client.HTTPConnection(server.address[0], server.address[1], timeout=5)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


# Regression (issue 8): HEAD was a 501; probes use it.
@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/detections?since=0", "/detections?since=inf", "/nope"])
def test_head_answers_like_get_without_body(served, path):
    server, status, _, _ = served
    status.set(profile="single", power_w=2.5)
    code, headers, body = request(server, "GET", path)
    head_code, head_headers, head_body = request(server, "HEAD", path)
    assert head_code == code and head_body == b""
    for name in ("Content-Type", "Content-Length"):
        assert head_headers[name] == headers[name], name
    assert int(head_headers["Content-Length"]) == len(body) > 0


def wait_closed(socks, deadline_s):
    """Sockets the server has not closed (no EOF or reset) within deadline_s; each recv is bounded by select."""
    open_socks, waited = list(socks), 0.0
    while open_socks and waited < deadline_s:
        readable = select.select(open_socks, [], [], 0.25)[0]
        waited += 0.25
        for sock in readable:
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data:
                open_socks.remove(sock)
    return open_socks


def connect_idle(server, n):
    socks = []
    for _ in range(n):
        sock = socket.create_connection(server.address, timeout=5)
        socks.append(sock)
    return socks


def server_threads():
    return [t for t in threading.enumerate() if t.name.startswith("reefwatch-http")]


# Regression (issue 8): each idle connection held a thread for ever.
def test_idle_connections_are_closed_and_hold_no_threads(tmp_path):
    clock = Clock()
    server = start_server(tmp_path, LiveStatus(clock=clock), None, clock, connection_timeout_s=0.5, max_workers=4)
    threads_before = threading.active_count()
    idle = connect_idle(server, 50)
    try:
        assert get(server, "/metrics")[0] == 200  # answered while 50 connections sit idle
        # One accept thread and max_workers handlers, however many connections wait.
        assert threading.active_count() - threads_before <= 0
        assert len(server_threads()) == 1 + 4
        assert wait_closed(idle, deadline_s=20.0) == []
    finally:
        for sock in idle:
            sock.close()
        server.stop()
    assert server_threads() == []


def test_connections_beyond_the_limit_get_503(tmp_path):
    clock = Clock()
    server = start_server(tmp_path, LiveStatus(clock=clock), None, clock, connection_timeout_s=30.0,
                          max_connections=3)
    idle = connect_idle(server, 3)
    try:
        code, _, body = get(server, "/metrics")
        assert code == 503 and "busy" in json.loads(body)["error"]
        for sock in idle:
            sock.close()
        codes = [get(server, "/metrics")[0] for _ in range(200)]  # bounded: the slots free as the server sees EOF
        assert 200 in codes and codes[codes.index(200):] == [200] * (len(codes) - codes.index(200))
    finally:
        server.stop()


# Regression (issue 8): with a listen backlog of 5, 34 of 200 concurrent GETs got no answer in 5 s.
def test_200_concurrent_gets_all_answered(served):
    server = served[0]
    n = 200
    barrier, results = threading.Barrier(n), [None] * n

    def fetch(i):
        barrier.wait()
        try:
            results[i] = get(server, "/metrics")[0]
        except OSError as e:  # includes timeouts: recorded, then reported by the assertion
            results[i] = repr(e)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60.0)
    assert results == [200] * n


def test_a_client_trickling_bytes_is_cut(tmp_path):
    """Each byte arrives within the timeout, but the whole request may take only a few timeouts."""
    clock = Clock()
    server = start_server(tmp_path, LiveStatus(clock=clock), None, clock, connection_timeout_s=0.3)
    sock = socket.create_connection(server.address, timeout=5)
    try:
        sock.sendall(b"GET /metrics HTTP/1.0\r\n")
        cut = False
        for _ in range(200):  # 200 x 0.1 s of trickling is well past REQUEST_DEADLINE_TIMEOUTS x 0.3 s
            if wait_closed([sock], deadline_s=0.1) == []:
                cut = True
                break
            try:
                sock.sendall(b"X")
            except OSError:  # the server shut the connection down between two bytes
                cut = True
                break
        assert cut
    finally:
        sock.close()
        server.stop()


def test_stop_does_not_wait_for_a_client_mid_request(tmp_path):
    clock = Clock()
    server = start_server(tmp_path, LiveStatus(clock=clock), None, clock, connection_timeout_s=60.0)
    sock = socket.create_connection(server.address, timeout=5)
    try:
        sock.sendall(b"GET /metr")  # a worker now waits up to 60 s for the rest of the line
        for _ in range(100):  # until a worker holds it (bounded)
            if server._gate.in_flight():
                break
            threading.Event().wait(0.02)
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        stopper.join(30.0)  # generous: without the cut it would take the full 60 s timeout
        assert not stopper.is_alive() and server_threads() == []
    finally:
        sock.close()


@pytest.mark.parametrize("limit", ["connection_timeout_s", "max_workers", "max_connections", "listen_backlog"])
def test_connection_limits_must_be_positive(limit):
    with pytest.raises(EdgeError, match=limit):
        EdgeHttpServer(LiveStatus(), **{limit: 0})
