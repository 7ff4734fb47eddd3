"""Shared helpers for the scripts in bench/: run inside the lab, time commands, clean up what a run made.

Not a benchmark itself. Python 3 standard library only, so the benchmarks run on a fresh lab machine.
"""

import itertools
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODULES = Path(os.environ.get("VIRTUP_BENCH_MODULES", REPO / "plugins" / "modules"))
LAB = REPO / "tests" / "lab" / "lab"
URI = os.environ.get("LIBVIRT_DEFAULT_URI", "qemu:///system")


def say(prog, msg):
    print(f"{prog}: {msg}", flush=True)


def in_lab():
    """True when this process runs inside the lab's network namespace with the lab env."""
    netns = os.environ.get("VIRTUP_LAB_NETNS")
    if not netns or not os.environ.get("VIRTUP_LAB_HOME"):
        return False
    try:
        here = os.readlink("/proc/self/ns/net")
        return here == f"net:[{os.stat(f'/run/netns/{netns}').st_ino}]"
    except OSError:
        return False


def enter_lab(script):
    """Re-executes `script` through `tests/lab/lab exec` unless already inside the lab.

    Guests may only be reached inside the lab's namespace, and every timed step must see the same env
    (TCG, libguestfs settings, the lab's virt-builder repo), so the whole benchmark runs there.
    """
    if in_lab():
        return
    if os.geteuid() != 0:
        sys.exit(f"{Path(script).name}: must run as root (the lab needs it)")
    status = subprocess.run([str(LAB), "status"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if status.returncode != 0:
        sys.exit(f"{Path(script).name}: the lab is not up; run `tests/lab/lab up` first")
    os.execv(str(LAB), [str(LAB), "exec", str(Path(script).resolve()), *sys.argv[1:]])


def machine_facts():
    """One line about the machine: the figures only mean something next to these."""
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "?"
    return (
        f"{os.cpu_count()} cores, accel={os.environ.get('VIRTUP_LAB_ACCEL', '?')}, "
        f"load {load}, other qemu guests running: {count_qemu()}, {platform.node()}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}"
    )


def count_qemu():
    n = 0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip().startswith("qemu-system"):
                    n += 1
            except OSError:
                pass
    return n


class Result:
    def __init__(self, argv, rc, out, err, secs):
        self.argv, self.rc, self.out, self.err, self.secs = argv, rc, out, err, secs

    def ok(self):
        return self.rc == 0

    def json(self):
        return json.loads(self.out)

    def describe(self):
        return f"`{' '.join(map(str, self.argv))}` exited {self.rc}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def run(argv, env=None, limit=900, stdin=subprocess.DEVNULL, stdin_text=None):
    """Runs argv to completion (killed after `limit` seconds) and returns a timed Result; `stdin_text`, when
    given, is its standard input."""
    t0 = time.monotonic()
    feed = {"input": stdin_text} if stdin_text is not None else {"stdin": stdin}
    try:
        p = subprocess.run(
            [str(a) for a in argv], env=env, capture_output=True, text=True, timeout=limit, **feed
        )
        return Result(argv, p.returncode, p.stdout, p.stderr, time.monotonic() - t0)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return Result(argv, -1, out, err + f"\n(killed after {limit}s)", time.monotonic() - t0)


def must(res, what):
    if not res.ok():
        raise BenchError(f"{what} failed: {res.describe()}")
    return res


class BenchError(Exception):
    pass


class Sandbox:
    """A 0700 temp dir with virtup's data and config dirs, and the module runner bound to them."""

    def __init__(self, tag):
        self.dir = Path(tempfile.mkdtemp(prefix=f"{tag}.", dir="/tmp"))  # mkdtemp: mode 0700
        self.data = self.dir / "data"
        self.config = self.dir / "config"
        self.env = dict(os.environ, VIRTUP_DATA_HOME=str(self.data), VIRTUP_CONFIG_HOME=str(self.config))
        self._n = itertools.count(1)  # next() is atomic: threads may ask for args files at once

    def args_file(self, args):
        path = self.dir / f"args-{next(self._n)}.json"
        path.write_text(json.dumps(args))
        return path

    def module(self, module, args, limit=900):
        """Runs a virtup module binary the way Ansible does: one args file, one JSON document out."""
        return run([MODULES / module, self.args_file(args)], env=self.env, limit=limit)

    def spawn_module(self, module, args, limit=900):
        """Starts a module run in the background; `Spawned.result()` waits for it and returns a Result.

        A thread per process notes when that process ends, so each one's time is its own, not the
        time at which we got round to collecting it.
        """
        return Spawned([MODULES / module, self.args_file(args)], self.env, limit)

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class Spawned:
    def __init__(self, argv, env, limit):
        self._result = None
        self._thread = threading.Thread(target=lambda: setattr(self, "_result", run(argv, env=env, limit=limit)))
        self._thread.start()

    def result(self):
        self._thread.join()
        return self._result


def virsh(*args, limit=120):
    return run(["virsh", "-q", "-c", URI, *args], env=dict(os.environ, LC_ALL="C"), limit=limit)


def libvirt_answers():
    return virsh("version", limit=15).ok()


def wait_for_libvirt(secs):
    """Waits up to `secs` for libvirt to answer (the lab may be restarting under us); True when it does."""
    deadline = time.monotonic() + secs
    while not libvirt_answers():
        if time.monotonic() >= deadline:
            return False
        time.sleep(2)
    return True


STALE_RE = re.compile(r"bn-(?:cl|tb)-(\d+)")


def _bench_alive(pid):
    try:
        return "bench/" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def sweep_stale(prog):
    """Removes what an earlier benchmark run could not clean up (say the lab went down under it).

    Only names this directory's benchmarks make (`bn-cl-<pid>…`, `bn-tb-<pid>…`), and only when that
    pid is no longer a running benchmark.
    """
    swept = []
    for d in virsh("list", "--all", "--name").out.split():
        m = STALE_RE.search(d)
        if m and not _bench_alive(m.group(1)):
            virsh("destroy", d)
            if virsh("undefine", d).ok():
                swept.append(f"domain {d}")
    pool = pool_path()
    for f in pool.iterdir():
        m = STALE_RE.search(f.name)
        if m and not _bench_alive(m.group(1)):
            f.unlink(missing_ok=True)
            swept.append(f"file {f.name}")
    for d in Path("/tmp").glob("bn-*-*.*"):
        m = STALE_RE.match(d.name)
        if m and d.is_dir() and not _bench_alive(m.group(1)):
            shutil.rmtree(d, ignore_errors=True)
            swept.append(f"dir {d}")
    if swept:
        virsh("pool-refresh", "default")
        say(prog, f"removed leftovers of earlier runs: {', '.join(swept)}")


def domain_exists(name):
    return virsh("dominfo", name).ok()


def pool_path(pool="default"):
    res = must(virsh("pool-dumpxml", pool), f"reading pool `{pool}`")
    m = re.search(r"<path>([^<]+)</path>", res.out)
    if not m:
        raise BenchError(f"pool `{pool}` has no path")
    return Path(m.group(1))


CREATED_RE = re.compile(r"created `[^`]*` in ([0-9.]+)s")
BUILT_RE = re.compile(r"built `[^`]*` in ([0-9.]+)s")


def reported_secs(regex, stderr):
    m = regex.search(stderr)
    return float(m.group(1)) if m else None


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_s(x):
    return "n/a" if x is None or x != x else f"{x:.2f} s"


def ratio(a, b):
    if a is None or b is None or b == 0 or a != a or b != b:
        return "n/a"
    r = a / b
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.4f}x (1/{1 / r:.0f})"


def load1():
    """The 1-minute load average, printed beside each figure: other agents share these cores."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


class LeaseWatch:
    """Notes when a domain's DHCP lease first shows an IPv4 address (what virt-up waits for).

    Polls `virsh domifaddr --source lease` from a thread, every 0.5 s, until stopped.
    """

    def __init__(self, domain, t0):
        self.domain, self.t0, self.secs = domain, t0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            res = virsh("domifaddr", self.domain, "--source", "lease", limit=20)
            if res.ok() and re.search(r"ipv4\s+\d+\.\d+\.\d+\.\d+", res.out):
                self.secs = time.monotonic() - self.t0
                return
            self._stop.wait(0.5)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.secs


def install_signal_exit():
    """SIGTERM/SIGINT become SystemExit so `finally` blocks clean up what the run made."""

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
