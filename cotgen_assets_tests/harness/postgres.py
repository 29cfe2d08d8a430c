"""Start a real, throw-away PostgreSQL server for tests: `initdb` + `pg_ctl` on a free port in a temp dir.

server = start_postgres()        # binaries from PATH or /usr/lib/postgresql/*/bin
server.url                       # postgresql://dagster:...@127.0.0.1:PORT/dagster
server.env()                     # the DAGSTER_PG_* variables POSTGRES_DAGSTER_YAML reads
server.query("SELECT ...", *params)  # rows, from the dagster database
start_dagster_dev(home, env=server.env(), dagster_yaml=POSTGRES_DAGSTER_YAML)
server.stop()

Postgres refuses to run as root, so as root the server runs as the `postgres` system user (from
Debian's package) or `nobody`, and the temp dir belongs to that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cotgen_assets_tests.harness.dagster import ROOT, free_port, wait_for

USER = "dagster"
DATABASE = "dagster"
# The documented Postgres instance file (docs/past-one-machine.md), which the tests run on.
POSTGRES_DAGSTER_YAML = ROOT / "scripts" / "dagster-postgres.yaml"


def find_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first, then the newest Debian install."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    installed = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    return Path(installed[-1]).parent if installed else None


def server_user() -> str | None:
    """Who runs the server: the caller, unless that is root (then `postgres` or `nobody`)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and there is neither a `postgres` nor a `nobody` user")


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path
    port: int
    password: str
    run_as: str | None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def env(self) -> dict[str, str]:
        """The variables of the documented Postgres dagster.yaml (scripts/dagster-postgres.yaml)."""
        return {
            "DAGSTER_PG_USERNAME": USER,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_DB": DATABASE,
            "DAGSTER_PG_PORT": str(self.port),
        }

    def connect(self, database: str = DATABASE):
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=USER, password=self.password, dbname=database
        )

    def query(self, sql: str, *params) -> list[tuple]:
        with self.connect() as connection, connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def run(self, *args: str) -> None:
        """A server binary, as the unprivileged user when we are root."""
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n{self.log()[-2000:]}"
            )

    def stop(self) -> None:
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self.run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(timeout: float = 60) -> PostgresServer:
    """initdb a fresh cluster in a temp dir, start it on 127.0.0.1:<free port>, create the database."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise RuntimeError(
            "PostgreSQL server binaries not found (initdb in PATH or /usr/lib/postgresql/*/bin); "
            "install them with `apt-get install postgresql` (scripts/test.sh does it as root)"
        )
    run_as = server_user()
    # Not under pytest's tmp_path: as root that is mode 700 and the server user could not enter it.
    root = Path(tempfile.mkdtemp(prefix="cotgen-postgres-"))
    server = PostgresServer(bin_dir, root, free_port(), secrets.token_hex(12), run_as)
    try:
        password_file = root / "password"
        password_file.write_text(server.password + "\n")
        (root / "socket").mkdir()
        if run_as:
            account = pwd.getpwnam(run_as)
            for path in (root, password_file, root / "socket"):
                os.chown(path, account.pw_uid, account.pw_gid)
        server.run(
            "initdb",
            "-D",
            str(server.data_dir),
            "-U",
            USER,
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = (
            f"-p {server.port} -k {root / 'socket'} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        server.run(
            "pg_ctl", "start", "-D", str(server.data_dir), "-l", str(server.log_path), "-o", options, "-w"
        )

        def accepts():
            try:
                server.connect("postgres").close()
                return True
            except Exception:
                return False

        wait_for(accepts, timeout, interval=0.2, message=f"PostgreSQL on port {server.port}")
        connection = server.connect("postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {DATABASE}")
        connection.close()
    except BaseException:
        server.stop()
        raise
    return server
