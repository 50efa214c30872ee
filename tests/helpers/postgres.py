"""Test helper: a private PostgreSQL cluster for the test session.

    cluster = Cluster().start()      # initdb into a temp dir, 127.0.0.1 on a free port
    url = cluster.create_db()        # a fresh database: postgresql://h2pile:PW@127.0.0.1:PORT/t_...
    cluster.drop_db(url); cluster.stop()

Each pytest process (each xdist worker) starts its own cluster, so nothing is
shared between workers and nothing needs a lock; its unix socket is in its
temp dir, its port a free one (another is tried if one is taken meanwhile).
PostgreSQL refuses to run as root: as root the cluster belongs to the
`postgres` user (Debian's package creates it). Clients connect over TCP with
a password (scram-sha-256), as the ledger does in the field.

The binaries: /usr/lib/postgresql/<newest>/bin (Debian), else initdb and
postgres beside initdb on PATH. Without them the tests skip, unless H2PILE_REQUIRE_PG=1
(CI): then they fail. A cluster left by a run that was killed is stopped and
removed by the next one (its owner pid is written beside it).
"""
import atexit
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers.mqtt_broker import free_port

USER = "h2pile"  # the cluster's superuser, also the ledger's user in the tests
PREFIX = "h2pile-pg-"
REQUIRE_ENV = "H2PILE_REQUIRE_PG"


class Unavailable(Exception):
    """No PostgreSQL installed here: the tests that need it skip (or fail in CI)."""


def required():
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def bindir():
    """The directory with initdb, postgres and pg_ctl, or Unavailable."""
    def version(path):
        m = re.search(r"/postgresql/(\d+)(?:\.(\d+))?/", path)
        return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    if found:
        return os.path.dirname(found[0])
    initdb = shutil.which("initdb")
    if initdb and os.path.exists(os.path.join(os.path.dirname(os.path.realpath(initdb)), "postgres")):
        return os.path.dirname(os.path.realpath(initdb))
    raise Unavailable("PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or on PATH; "
                      "Debian: apt-get install postgresql)")


def _run_as():
    """subprocess keyword arguments that run a command as the cluster's owner."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable("running as root, and there is no 'postgres' user to run PostgreSQL as "
                          "(Debian's postgresql package creates it)")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _base_dir(owner_kw):
    # the owner must reach the temp dir: as root, pytest's may be private
    base = tempfile.gettempdir()
    if owner_kw and not os.stat(base).st_mode & 0o001:
        base = "/tmp"
    return base


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Cluster:
    def __init__(self):
        self.bin = bindir()
        self.as_owner = _run_as()
        self.dir = None
        self.port = None
        self.password = secrets.token_hex(12)
        self._admin = None
        self.proc = None

    # ---------------------------------------------------------------- life
    def start(self):
        base = _base_dir(self.as_owner)
        reap_leftovers(base, self.bin, self.as_owner)
        self.dir = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
        (self.dir / "owner.pid").write_text(str(os.getpid()))
        if self.as_owner:
            os.chown(self.dir, self.as_owner["user"], self.as_owner["group"])
        atexit.register(self.stop)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self.as_owner:
            os.chown(pwfile, self.as_owner["user"], self.as_owner["group"])
        self._pg("initdb", "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile), "-E", "UTF8",
                 "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
        pwfile.unlink()
        # fsync off: a test cluster lives as long as the run (the ledger's
        # commit-before-ack order does not depend on it, only crash safety
        # of the machine would); small, so two workers' clusters fit anywhere
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nfsync = off\n"
                    "full_page_writes = off\nshared_buffers = 16MB\nmax_connections = 60\n"
                    "log_min_messages = warning\n" % self.dir)
        last = ""
        for _ in range(5):  # a free port can be taken before the server binds it
            self.port = free_port()
            try:
                self._serve()
                return self
            except RuntimeError as e:
                last = str(e)
        raise RuntimeError("PostgreSQL did not start on any of 5 ports: %s" % last)

    def _serve(self):
        # the server is this process's child (not daemonized by pg_ctl): it is
        # stopped and reaped here, and leaves no zombie behind
        log = self.dir / ("server-%d.log" % self.port)
        with open(log, "ab") as f:
            self.proc = subprocess.Popen([os.path.join(self.bin, "postgres"), "-D", str(self.data),
                                          "-p", str(self.port)], stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                         cwd=str(self.dir), start_new_session=True, **self.as_owner)
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end:
            if b"ready to accept connections" in log.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self._kill()
        raise RuntimeError("postgres on port %d did not start: %s" % (self.port, log.read_text(errors="replace")[-1500:]))

    def _kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # immediate shutdown: the cluster is thrown away
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def stop(self):
        if self.dir is None:
            return
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    @property
    def data(self):
        return self.dir / "data"

    def _pg(self, tool, *args):
        p = subprocess.run([os.path.join(self.bin, tool)] + list(args), capture_output=True, text=True,
                           cwd=str(self.dir), timeout=120, **self.as_owner)
        if p.returncode != 0:
            raise RuntimeError("%s %s failed (%d): %s%s" % (tool, " ".join(args), p.returncode, p.stdout, p.stderr))
        return p.stdout

    # ----------------------------------------------------------- databases
    def url(self, dbname, password=True):
        return "postgresql://%s%s@127.0.0.1:%d/%s" % (USER, ":" + self.password if password else "", self.port,
                                                      dbname)

    def admin(self):
        """An autocommit connection to the maintenance database, over the unix socket."""
        import psycopg
        if self._admin is None or self._admin.closed:
            self._admin = psycopg.connect(host=str(self.dir), port=self.port, user=USER, dbname="postgres",
                                          autocommit=True)
        return self._admin

    def create_db(self):
        name = "t_" + secrets.token_hex(6)
        self.admin().execute('CREATE DATABASE "%s"' % name)
        return self.url(name)

    def drop_db(self, url):
        name = url.rsplit("/", 1)[1]
        self.admin().execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)

    def terminate(self, url, application_name="h2pile-ledger"):
        """Cut every connection the ledger has to url's database (as a
        server restart or a network loss would); returns how many."""
        name = url.rsplit("/", 1)[1]
        rows = self.admin().execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            (name, application_name)).fetchall()
        return len(rows)


def reap_leftovers(base, bin_dir, as_owner):
    """Stop and remove the clusters of test runs that died without stopping theirs."""
    for d in glob.glob(os.path.join(base, PREFIX + "*")):
        try:
            pid = int(Path(d, "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if _alive(pid):
            continue
        if Path(d, "data", "postmaster.pid").exists():
            subprocess.run([os.path.join(bin_dir, "pg_ctl"), "-D", os.path.join(d, "data"), "-m", "immediate",
                            "-w", "stop"], capture_output=True, timeout=60, **as_owner)
        shutil.rmtree(d, ignore_errors=True)
