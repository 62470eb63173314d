"""Where does litegate's proxy time go? CPU per request by feature, and a py-spy profile.

    .venv/bin/python bench/profile_proxy.py                      # ablation table
    .venv/bin/python bench/profile_proxy.py --pyspy default      # + a py-spy profile of one variant
    .venv/bin/python bench/profile_proxy.py --variants default --modules   # + what the idle process imported
    .venv/bin/python bench/profile_proxy.py --variant nolog-fixed=LITEGATE_ACCESS_LOG=false,LITEGATE_LIMIT_STRATEGY=fixed-window

Each variant is a fresh ``litegate serve`` set up as in ``bench/proxy.py`` (temp home, key,
route ``chat`` -> the mock), with some ``LITEGATE_*`` settings changed. Under
``wrk -t2 -c64`` it reports RPS and, more robust on a shared machine, the server's CPU
seconds per request (utime+stime of the process tree from /proc, divided by the
requests wrk completed), plus the sequential added p50 (interleaved probe, as in
proxy.py). The difference between two variants is what the toggled feature costs.

``--pyspy NAME`` records that variant with ``py-spy record --gil`` (install it with
``.venv/bin/pip install py-spy``; not a project dependency) and prints the top functions
by self time and a per-component breakdown. Caveat: with uvloop on Python 3.11, py-spy
attributes some time spent in C (socket writes inside uvloop) to the last Python frame
(aiohttp ``StreamWriter._writelines``, uvicorn ``RequestResponseCycle.send``); the
ceiling shows the same frames, so compare components, not those two lines.
Not part of the test suite; nothing is written outside bench/.work/.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy as P  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
BUILTIN = {
    "ceiling": None,
    "default": {},
    "no-access-log": {"LITEGATE_ACCESS_LOG": "false"},
    "no-limits": {"_nolimits": "1"},
    "no-log-no-limits": {"LITEGATE_ACCESS_LOG": "false", "_nolimits": "1"},
}


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in P.tree_pids(pid):
        try:
            s = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        f = s[s.rindex(")") + 2:].split()
        total += (int(f[11]) + int(f[12])) / HZ
    return total


MODULES_WRAPPER = """
import collections, importlib.util, os, signal, sys
def _dump(signum, frame):
    size = collections.Counter(); count = collections.Counter()
    for name, mod in list(sys.modules.items()):
        top = name.split(".")[0]
        count[top] += 1
        f = getattr(mod, "__file__", None) or ""
        if f.endswith(".py"):
            try:
                size[top] += os.path.getsize(importlib.util.cache_from_source(f))
            except OSError:
                pass
    with open(os.environ["LG_MODULES_OUT"] + ".names", "w") as fh:
        fh.write("\\n".join(sorted(sys.modules)))
    with open(os.environ["LG_MODULES_OUT"], "w") as fh:
        fh.write(f"{len(sys.modules)} modules, {sum(size.values()) / 2**20:.1f} MiB of .pyc loaded\\n")
        for top, n in size.most_common(30):
            fh.write(f"  {n / 2**20:6.2f} MiB .pyc  {count[top]:4d} modules  {top}\\n")
signal.signal(signal.SIGUSR1, _dump)
from litegate.cli import main
sys.argv = ["litegate"] + sys.argv[1:]
sys.exit(main())
"""


def modules_report(work: Path, mport: int) -> str:
    """Idle RSS and the packages a proxy-only ``litegate serve`` has imported (by .pyc size)."""
    import signal as _signal

    wrapper = work / "modules_wrapper.py"
    wrapper.write_text(MODULES_WRAPPER)
    out = work / "modules.txt"
    t = P.setup_litegate(work, mport, P.free_port())
    t.env["LG_MODULES_OUT"] = str(out)
    procs = P.Procs()
    try:
        srv = procs.spawn([sys.executable, str(wrapper)] + t.argv[1:], work / "modules-serve.log", env=t.env)
        res = P.Result("litegate", "litegate")
        P.wait_ready(srv, time.perf_counter(), t, res)
        time.sleep(1.0)
        rss = P.tree_rss_mb(srv.pid)
        os.kill(srv.pid, _signal.SIGUSR1)
        for _ in range(50):
            if out.exists() and out.stat().st_size:
                break
            time.sleep(0.1)
        return (f"idle RSS {rss:.1f} MiB (through a wrapper that adds a signal handler), ready in "
                f"{res.ready_s:.3f}s\n" + (out.read_text() if out.exists() else "(no module dump)"))
    finally:
        procs.stop_all()


def summarize(raw: Path, top: int = 25) -> str:
    """Top self/inclusive functions and a component breakdown of the main thread."""
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    comp: collections.Counter[str] = collections.Counter()
    libs = ("structlog", "limits", "prometheus_client", "aiohttp", "msgspec", "litestar",
            "sqlalchemy", "hashlib", "json", "uvicorn")
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or "Thread._bootstrap" in stack:
            continue
        count = int(n)
        total += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        frames = [re.sub(r"\(/\S*/(site-packages|lib/python3\.\d+)/", "(", f) for f in frames]
        self_c[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
        entry = next((i for i, f in enumerate(frames)
                      if f.startswith("GatewayApp.__call__") or (f.startswith("app (") and "ceiling.py" in f)),
                     None)
        if entry is None:
            comp["[server/loop outside the app] " + frames[-1].split(" (")[0]] += count
            continue
        owner, cat = None, None
        for f in frames[entry:]:
            path = f[f.rfind("(") + 1:-1]
            if "litegate/" in path or path.endswith("ceiling.py"):
                owner = path.split("litegate/")[-1].split("/")[-1] + ":" + f.split(" (")[0]
                continue
            lib = next((x for x in libs if path.startswith(x + "/") or path == x + ".py"), None)
            if lib:
                cat = f"{lib} <- {owner}"
                break
        comp[cat or f"app itself: {owner}"] += count
    out = [f"main-thread samples: {total}", "", "top self:"]
    out += [f"  {100 * v / total:5.1f}%  {k}" for k, v in self_c.most_common(top)]
    out += ["", "top inclusive:"]
    out += [f"  {100 * v / total:5.1f}%  {k}" for k, v in incl.most_common(top)]
    out += ["", "by component (inside the app: outermost library frame, else innermost app frame):"]
    out += [f"  {100 * v / total:5.1f}%  {k}" for k, v in comp.most_common(top + 10)]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="ceiling,default,no-access-log,no-limits",
                    help=f"comma-separated built-ins: {','.join(BUILTIN)}")
    ap.add_argument("--variant", action="append", default=[],
                    help="extra variant NAME=ENV=VALUE[,ENV=VALUE...] (repeatable)")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--probe", type=int, default=300)
    ap.add_argument("--pyspy", metavar="NAME", help="also profile this variant with py-spy")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--modules", action="store_true",
                    help="also report idle RSS and the packages litegate serve has imported")
    a = ap.parse_args()
    if not 0 < a.duration <= 120:
        ap.error("--duration must be in (0, 120]")

    variants: dict[str, dict[str, str] | None] = {}
    for name in [v for v in a.variants.split(",") if v]:
        if name not in BUILTIN:
            ap.error(f"unknown variant {name}")
        variants[name] = BUILTIN[name]
    for spec in a.variant:
        name, _, rest = spec.partition("=")
        env = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
        variants[name] = env
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if a.pyspy and not Path(pyspy).exists():
        ap.error("py-spy not found: .venv/bin/pip install py-spy")

    P.WORK.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=time.strftime("profile-%Y%m%d-%H%M%S-"), dir=P.WORK))
    procs = P.Procs()
    rows = []
    try:
        mport = P.free_port()
        procs.spawn([sys.executable, str(P.BENCH / "mock_upstream.py"), "--host", P.HOST, "--port",
                     str(mport)], work / "mock.log", cwd=work)
        P.wait_ready(procs.procs[-1], time.perf_counter(),
                     P.Target("mock", "mock", mport, [], ready_path="/v1/models"), P.Result("m", "m"))
        for name, env in variants.items():
            port = P.free_port()
            if env is None:
                t = P.Target("ceiling", "ceiling", port,
                             [sys.executable, str(P.BENCH / "ceiling.py"), "--host", P.HOST, "--port",
                              str(port), "--upstream", f"http://{P.HOST}:{mport}"])
            else:
                t = P.setup_litegate(work, mport, port, nolimits=bool(env.get("_nolimits")))
                t.env.update({k: v for k, v in env.items() if not k.startswith("_")})
            srv = procs.spawn(t.argv, work / f"{name}.log", env=t.env, cwd=work)
            try:
                P.wait_ready(srv, time.perf_counter(), t, P.Result(name, name))
                P.run_wrk(port, t.auth_key, 3, a.connections, 2, work, f"{name}-warm")
                rec = None
                if a.pyspy == name:
                    rec = subprocess.Popen(
                        [pyspy, "record", "--gil", "-r", str(a.rate), "-f", "raw", "-o",
                         str(work / f"{name}.pyspy.txt"), "-d", str(int(a.duration) + 1), "-p",
                         str(srv.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(0.5)
                c0, w0 = cpu_seconds(srv.pid), time.perf_counter()
                w = P.run_wrk(port, t.auth_key, a.duration, a.connections, 2, work, name)
                cpu, wall = cpu_seconds(srv.pid) - c0, time.perf_counter() - w0
                if rec is not None:
                    rec.wait(a.duration + 60)
                pr = P.run_probe(port, t.auth_key, mport, a.probe)
                added = pr["target"]["p50"] - pr["mock"]["p50"]
                row = (name, w["rps"], cpu / max(w["requests"], 1) * 1e6, 100 * cpu / wall, added,
                       w["non2xx"], P.loadavg())
                rows.append(row)
                print(f"{name:20s} {row[1]:7.0f} rps  {row[2]:5.0f} us CPU/req  ({row[3]:3.0f}% of a core)  "
                      f"seq added p50 {row[4]:.3f} ms  non-2xx {row[5]}  load {row[6]}", flush=True)
            finally:
                P.Procs.stop(srv)
                procs.procs.remove(srv)
        if a.modules:
            print()
            print(modules_report(work, mport))
    finally:
        procs.stop_all()
    if a.pyspy and (work / f"{a.pyspy}.pyspy.txt").exists():
        print()
        print(f"py-spy --gil profile of {a.pyspy} under load ({work / (a.pyspy + '.pyspy.txt')}):")
        print(summarize(work / f"{a.pyspy}.pyspy.txt"))
    for d in work.glob("litegate-home-*"):
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
