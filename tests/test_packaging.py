"""Dockerfile.l4t cannot be built here (arm64, JetPack base image): check its structure instead.
The packaged config: it leaves the deployment profile (budget, frame rate, power) to the bundle.
The systemd unit: its sandbox, systemd 237 compatibility and, where systemd-analyze can, its exposure score."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from edge.config import load_edge_config
from edge.energy import DeploymentProfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NANO_BASES = ("nvcr.io/nvidia/l4t-ml:r32.7.1-py3", "nvcr.io/nvidia/l4t-tensorrt:r8.2.1-runtime")


@pytest.fixture(scope="module")
def dockerfile():
    with open(os.path.join(ROOT, "Dockerfile.l4t")) as f:
        text = f.read()
    instructions = []
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _all(instructions, keyword):
    return [rest for k, rest in instructions if k == keyword]


def test_base_image_is_jetpack_46(dockerfile):
    assert _all(dockerfile, "FROM") and _all(dockerfile, "FROM")[0] in NANO_BASES


def test_installs_pycuda_for_python36(dockerfile):
    runs = " ".join(_all(dockerfile, "RUN"))
    assert "pycuda==2021.1" in runs and "python3 -m pip" in runs


def test_copies_the_edge_runtime_and_its_config_only(dockerfile):
    sources = [rest.split()[0] for rest in _all(dockerfile, "COPY")]
    assert "edge" in sources and "packaging/edge.json" in sources
    assert not any(s.startswith("trainer") for s in sources)
    for source in sources:
        assert os.path.exists(os.path.join(ROOT, source)), source


def test_entry_point_runs_the_daemon(dockerfile):
    entry = json.loads(_all(dockerfile, "ENTRYPOINT")[-1])
    command = json.loads(_all(dockerfile, "CMD")[-1])
    assert entry == ["python3", "-m", "edge"] and command[0] == "serve"
    config = command[command.index("--config") + 1]
    assert any(config in rest for rest in _all(dockerfile, "COPY"))


# --- packaging/edge.json: the deployment (budget, frame rate, power) is the bundle's unless set there ---

PACKAGED_CONFIG = os.path.join(ROOT, "packaging", "edge.json")
# The config keys that refine a bundle's DeploymentProfile: one per field, capture_interval_s spelled interval_s.
DEPLOYMENT_KEYS = sorted("interval_s" if f == "capture_interval_s" else f for f in DeploymentProfile.FIELDS)


def test_packaged_config_lists_every_deployment_key_as_null():
    with open(PACKAGED_CONFIG) as f:
        raw = json.load(f)
    assert [k for k in DEPLOYMENT_KEYS if k not in raw] == []  # listed, so an installer sees what can be set
    assert {k: raw[k] for k in DEPLOYMENT_KEYS} == dict.fromkeys(DEPLOYMENT_KEYS)
    assert sorted(load_edge_config(PACKAGED_CONFIG).given & set(DEPLOYMENT_KEYS)) == []


# Bundle deployments whose every field differs from the config defaults, so any value the file gives shows.
@pytest.mark.parametrize("bundle_deployment", [
    DeploymentProfile(3.0, "total", frames_per_day=500.0, powered_hours_per_day=6.0, idle_power_w=0.2,
                      sleep_power_w=0.01),
    DeploymentProfile(40.0, "inference", capture_interval_s=60.0, powered_hours_per_day=12.0, idle_power_w=1.1,
                      sleep_power_w=0.05),
])
def test_packaged_config_leaves_the_deployment_to_the_bundle(bundle_deployment):
    deployment, origin = load_edge_config(PACKAGED_CONFIG).resolve_deployment(bundle_deployment)
    assert deployment == bundle_deployment
    assert origin == dict.fromkeys(DeploymentProfile.FIELDS, "bundle")


def test_packaged_config_without_a_bundle_deployment_falls_back_to_the_defaults():
    deployment, origin = load_edge_config(PACKAGED_CONFIG).resolve_deployment(None)
    assert deployment == load_edge_config().deployment_profile()
    assert origin == dict.fromkeys(DeploymentProfile.FIELDS, "default")


# --- packaging/reefwatch.service: sandboxed, and accepted by systemd 237 (Ubuntu 18.04 / JetPack 4.6) ---

UNIT = os.path.join(ROOT, "packaging", "reefwatch.service")
JETPACK46_SYSTEMD = 237
# systemd release that has each directive the unit uses: the one that introduced it where systemd's NEWS names
# it, else a release known to have it. 183 (2012) stands for "in every systemd anyone runs". A directive missing
# here fails the test: look its version up before using it.
EARLY = 183
DIRECTIVE_SINCE = {
    "Description": EARLY, "Documentation": EARLY, "Wants": EARLY, "After": EARLY, "WantedBy": EARLY,
    "StartLimitIntervalSec": 230,  # renamed from StartLimitInterval= and moved to [Unit] in 230
    "Type": EARLY, "NotifyAccess": EARLY, "User": EARLY, "Group": EARLY, "SupplementaryGroups": EARLY,
    "WorkingDirectory": EARLY, "Environment": EARLY, "ExecStart": EARLY, "UMask": EARLY, "Restart": EARLY,
    "RestartSec": EARLY, "Nice": EARLY, "PrivateTmp": EARLY, "CapabilityBoundingSet": EARLY,
    "TimeoutStartSec": 188, "TimeoutStopSec": 188, "WatchdogSec": 207, "NoNewPrivileges": 187,
    "SystemCallFilter": 209, "SystemCallErrorNumber": 209, "SystemCallArchitectures": 209,
    "DeviceAllow": 210, "DevicePolicy": 212, "RestrictAddressFamilies": 211, "RuntimeDirectory": 211,
    "ProtectSystem": 214, "ProtectHome": 214, "AmbientCapabilities": 229, "ReadWritePaths": 231,
    "RestrictRealtime": 231, "MemoryDenyWriteExecute": 231, "ProtectKernelTunables": 232,
    "ProtectKernelModules": 232, "ProtectControlGroups": 232, "RemoveIPC": 232, "RestrictNamespaces": 233,
    "StateDirectory": 235, "CacheDirectory": 235, "LockPersonality": 235, "KeyringMode": 235,
    # Newer than 237: listed so that adding one fails with its version rather than as unknown.
    "TemporaryFileSystem": 238, "PrivateMounts": 239, "ProtectHostname": 242, "RestrictSUIDSGID": 242,
    "ProtectKernelLogs": 244, "ProtectClock": 245, "ProtectProc": 247, "ProcSubset": 247, "PrivateIPC": 248,
}
# Values that came later than their directive.
VALUE_SINCE = {("ProtectSystem", "strict"): 232, ("RestrictNamespaces", "yes"): 233}
# System call groups: the first named sets came in 231, @reboot and @swap in 233, @system-service in 239.
SYSCALL_GROUP_SINCE = {"@clock": 231, "@cpu-emulation": 231, "@debug": 231, "@module": 231, "@mount": 231,
                       "@obsolete": 231, "@raw-io": 231, "@privileged": 231, "@reboot": 233, "@swap": 233,
                       "@resources": 233, "@system-service": 239}
# GPU nodes CUDA/TensorRT open on L4T R32 (Nano): nvmap, nvhost-ctrl and the nvgpu channels.
NANO_GPU_NODES = ["/dev/nvmap", "/dev/nvhost-ctrl", "/dev/nvhost-ctrl-gpu", "/dev/nvhost-gpu", "/dev/nvhost-as-gpu",
                  "/dev/nvhost-prof-gpu", "/dev/nvhost-dbg-gpu", "/dev/nvhost-tsg-gpu", "/dev/nvhost-sched-gpu",
                  "/dev/nvhost-ctxsw-gpu"]


def read_unit(path=UNIT):
    """[(section, key, value)] in file order; repeated keys are kept."""
    entries, section = [], None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            entries.append((section, key.strip(), value.strip()))
    return entries


@pytest.fixture(scope="module")
def unit():
    return read_unit()


def values(entries, key):
    return [v for _, k, v in entries if k == key]


def test_every_directive_exists_in_systemd_237(unit):
    unknown = sorted({k for _, k, _ in unit} - set(DIRECTIVE_SINCE))
    assert not unknown, "look up the systemd version of %s and add it to DIRECTIVE_SINCE" % unknown
    too_new = sorted((k, DIRECTIVE_SINCE[k]) for _, k, _ in unit if DIRECTIVE_SINCE[k] > JETPACK46_SYSTEMD)
    too_new += sorted((k + "=" + v, VALUE_SINCE[(k, v)]) for _, k, v in unit
                      if VALUE_SINCE.get((k, v), 0) > JETPACK46_SYSTEMD)
    assert not too_new


def test_system_call_groups_exist_in_systemd_237(unit):
    groups = [g for v in values(unit, "SystemCallFilter") for g in v.lstrip("~").split() if g.startswith("@")]
    assert groups
    assert [g for g in groups if SYSCALL_GROUP_SINCE.get(g, JETPACK46_SYSTEMD + 1) > JETPACK46_SYSTEMD] == []


@pytest.mark.parametrize("key, expected", [
    ("User", "reefwatch"), ("Group", "reefwatch"), ("SupplementaryGroups", "video"),
    ("NoNewPrivileges", "yes"), ("CapabilityBoundingSet", ""), ("AmbientCapabilities", ""),
    ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
    ("ProtectKernelTunables", "yes"), ("ProtectKernelModules", "yes"), ("ProtectControlGroups", "yes"),
    ("DevicePolicy", "closed"), ("RestrictNamespaces", "yes"), ("RestrictRealtime", "yes"),
    ("LockPersonality", "yes"), ("SystemCallArchitectures", "native"), ("RemoveIPC", "yes"),
    ("UMask", "0027"), ("SystemCallErrorNumber", "EPERM"),
    # libargus reaches nvargus-daemon through /tmp/argus_socket: a private /tmp breaks csi:// sources.
    ("PrivateTmp", "no"),
])
def test_sandbox_directive(unit, key, expected):
    assert values(unit, key) == [expected]


def test_sandbox_leaves_out_what_would_break_the_gpu(unit):
    # CUDA's PTX JIT and TensorRT/onnxruntime generated code need writable+executable memory;
    # PrivateDevices= would hide /dev/nvhost-* and the cameras.
    assert values(unit, "MemoryDenyWriteExecute") == [] and values(unit, "PrivateDevices") == []


def test_address_families(unit):
    assert [set(v.split()) for v in values(unit, "RestrictAddressFamilies")] == [{"AF_UNIX", "AF_INET", "AF_INET6"}]


def test_device_allow_uses_only_forms_237_accepts(unit):
    specs = [v.split() for v in values(unit, "DeviceAllow")]
    assert all(len(s) == 2 and set(s[1]) <= set("rwm") for s in specs), specs
    nodes = [s[0] for s in specs]
    for node in nodes:  # exact /dev paths or /proc/devices group names; 237 takes no path globs
        assert (node.startswith("/dev/") and not set(node) & set("*?[")) or re.match(r"^(char|block)-[\w-]+$", node)
    assert "char-video4linux" in nodes
    assert [n for n in NANO_GPU_NODES if n not in nodes] == []


def _writable_roots(unit):
    roots = ["/var/lib/" + d for v in values(unit, "StateDirectory") for d in v.split()]
    roots += ["/var/cache/" + d for v in values(unit, "CacheDirectory") for d in v.split()]
    roots += ["/run/" + d for v in values(unit, "RuntimeDirectory") for d in v.split()]
    roots += [p.lstrip("-") for v in values(unit, "ReadWritePaths") for p in v.split()]
    return roots


def _under(path, roots):
    return any(os.path.normpath(path) == r or os.path.normpath(path).startswith(r + "/") for r in roots)


def test_everything_the_daemon_writes_is_writable(unit):
    """ProtectSystem=strict makes / read-only: the config's store and crops and the cache folders must be writable."""
    with open(os.path.join(ROOT, "packaging", "edge.json")) as f:
        config = json.load(f)
    roots = _writable_roots(unit)
    writes = [os.path.dirname(config["store_path"]), config["crops_dir"]]
    env = dict(v.split("=", 1) for v in values(unit, "Environment"))
    writes += [env[name] for name in ("REEFWATCH_CACHE_DIR", "CUDA_CACHE_PATH", "XDG_CACHE_HOME", "TMPDIR")]
    assert [p for p in writes if not _under(p, roots)] == [], roots


def _systemd_analyze():
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return tool


def _run(args):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)


def test_systemd_analyze_security_exposure(tmp_path):
    tool = _systemd_analyze()
    path = str(tmp_path / "reefwatch.service")
    shutil.copy(UNIT, path)
    result = _run([tool, "security", "--no-pager", "--offline=true", path])
    if "--offline" in result.stdout and result.returncode != 0:  # systemd older than 250
        pytest.skip("systemd-analyze has no --offline: " + result.stdout.strip().splitlines()[-1])
    match = re.search(r"Overall exposure level for reefwatch\.service: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout[-2000:]
    assert float(match.group(1)) <= 4.5, result.stdout


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    """The local systemd (newer than 237) parses every line; the 237 check is the version table above."""
    tool = _systemd_analyze()
    path = str(tmp_path / "reefwatch.service")
    with open(UNIT) as f:  # the interpreter must exist where the test runs, so point ExecStart at this one
        text = f.read().replace("ExecStart=/usr/bin/python3 ", "ExecStart=%s " % sys.executable)
    with open(path, "w") as f:
        f.write(text)
    result = _run([tool, "verify", "--man=no", path])
    complaints = [line for line in result.stdout.splitlines()
                  if re.search(r"unknown|invalid|failed to parse|ignoring|not supported", line, re.I)]
    assert result.returncode == 0 and complaints == [], result.stdout
