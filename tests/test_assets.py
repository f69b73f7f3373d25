"""SFM assets: lookup order, download over http:// and file:// with sha256 checks, failure cleanup."""

import contextlib
import functools
import hashlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from evp_anim import assets
from evp_anim.errors import EvpError


@pytest.fixture()
def sfm_copy(tmp_path, sfm_dir) -> Path:
    """A private copy of the pinned SFM files (the fixture dir is read-only and shared)."""
    d = tmp_path / "served"
    d.mkdir()
    for name in assets.SFM_FILES:
        shutil.copyfile(sfm_dir / name, d / name)
    return d


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def serve():
    """serve(folder) → base URL of a loopback HTTP server for ``folder`` (port 0 = any free port)."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture()
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv(assets.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_embedded_sums_match_the_shared_sha256sums(sfm_dir):
    listed = {}
    for line in (sfm_dir / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        listed[name] = digest
    assert {k: v[0] for k, v in assets.SFM_FILES.items()} == listed
    assert all((sfm_dir / k).stat().st_size == v[1] for k, v in assets.SFM_FILES.items())
    assert assets.EOS_COMMIT in assets.DEFAULT_BASE_URL
    assert assets.DEFAULT_BASE_URL.endswith("/share")
    assert "non-commercial" in assets.SFM_LICENCE


def test_verify_accepts_the_pinned_files(sfm_dir):
    assert assets.verify_sfm_dir(sfm_dir) == []


def test_download_over_http_verifies_every_file(tmp_path, sfm_copy, serve, clean_env):
    fractions = []
    dest = assets.download_sfm(tmp_path / "dest", base_url=serve(sfm_copy), progress=fractions.append)
    assert dest == tmp_path / "dest"
    for name, (digest, size) in assets.SFM_FILES.items():
        assert _sha(dest / name) == digest
        assert (dest / name).stat().st_size == size
    assert assets.verify_sfm_dir(dest) == []
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(b >= a for a, b in zip(fractions, fractions[1:]))
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_download_from_file_url(tmp_path, sfm_copy, clean_env):
    dest = assets.download_sfm(tmp_path / "dest", base_url=sfm_copy.as_uri())
    assert sorted(p.name for p in dest.iterdir()) == sorted(assets.SFM_FILES)
    assert assets.verify_sfm_dir(dest) == []


def test_download_skips_files_already_right(tmp_path, sfm_copy, serve, clean_env):
    dest = tmp_path / "dest"
    dest.mkdir()
    shutil.copyfile(sfm_copy / "sfm_shape_3448.bin", dest / "sfm_shape_3448.bin")
    (sfm_copy / "sfm_shape_3448.bin").unlink()  # the server no longer has it: a fetch would fail
    assets.download_sfm(dest, base_url=serve(sfm_copy))
    assert assets.verify_sfm_dir(dest) == []


def test_corrupted_file_on_server_fails_and_leaves_no_file(tmp_path, sfm_copy, serve, clean_env):
    bad = "sfm_model_contours.json"  # dict order: fetched after the first few files
    (sfm_copy / bad).write_bytes(b"{}\n")
    dest = tmp_path / "dest"
    with pytest.raises(EvpError, match="sha256") as err:
        assets.download_sfm(dest, base_url=serve(sfm_copy))
    assert "\n" not in str(err.value)
    assert not (dest / bad).exists()
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]
    names = list(assets.SFM_FILES)
    for name in names[: names.index(bad)]:
        assert _sha(dest / name) == assets.SFM_FILES[name][0]  # files before it intact


def test_existing_different_file_is_refused_not_replaced(tmp_path, sfm_copy, serve, clean_env):
    # A file under an SFM name with other content may be the user's own: never deleted or replaced,
    # and the refusal comes before anything is fetched.
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "ibug_to_sfm.txt").write_text("tampered")
    with pytest.raises(EvpError, match="not the pinned ibug_to_sfm.txt") as err:
        assets.download_sfm(dest, base_url=serve(sfm_copy))
    assert str(dest / "ibug_to_sfm.txt") in str(err.value) and "\n" not in str(err.value)
    assert (dest / "ibug_to_sfm.txt").read_text() == "tampered"
    assert sorted(p.name for p in dest.iterdir()) == ["ibug_to_sfm.txt"]


def test_http_404_raises_and_leaves_no_file(tmp_path, sfm_copy, serve, clean_env):
    (sfm_copy / "ibug_to_sfm.txt").unlink()
    dest = tmp_path / "dest"
    with pytest.raises(EvpError, match="HTTP 404"):
        assets.download_sfm(dest, base_url=serve(sfm_copy))
    assert not (dest / "ibug_to_sfm.txt").exists()


def test_connection_refused_raises(tmp_path, clean_env):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EvpError, match="failed"):
        assets.download_sfm(tmp_path / "dest", base_url=f"http://127.0.0.1:{port}")
    assert list((tmp_path / "dest").iterdir()) == []


def test_missing_dir_error_names_the_download_command(tmp_path, clean_env):
    with pytest.raises(EvpError) as err:
        assets.find_sfm_dir(tmp_path / "nowhere")
    msg = str(err.value)
    assert "evp-anim assets download" in msg and "EVP_ANIM_SFM_DIR" in msg and "--sfm-dir" in msg
    assert str(tmp_path / "nowhere") in msg and "\n" not in msg


def test_incomplete_dir_error_names_missing_files(tmp_path, clean_env):
    d = tmp_path / "partial"
    d.mkdir()
    (d / "sfm_shape_3448.bin").write_bytes(b"x")
    with pytest.raises(EvpError, match="expression_blendshapes_3448.bin"):
        assets.find_sfm_dir(d)
    assert "expression_blendshapes_3448.bin: missing" in assets.verify_sfm_dir(d)
    assert any(p.startswith("sfm_shape_3448.bin: sha256") for p in assets.verify_sfm_dir(d))


def test_lookup_order_argument_then_env_then_cache(tmp_path, sfm_copy, monkeypatch, clean_env):
    cache = tmp_path / "cache" / "evp-anim" / "sfm"
    shutil.copytree(sfm_copy, cache)
    env_dir = tmp_path / "env"
    shutil.copytree(sfm_copy, env_dir)
    arg_dir = tmp_path / "arg"
    shutil.copytree(sfm_copy, arg_dir)

    assert assets.find_sfm_dir() == cache
    monkeypatch.setenv(assets.ENV_VAR, str(env_dir))
    assert assets.find_sfm_dir() == env_dir
    assert assets.find_sfm_dir(arg_dir) == arg_dir
    # An env var pointing at an empty folder is an error, not a silent fall-back to the cache.
    monkeypatch.setenv(assets.ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(EvpError, match=assets.ENV_VAR):
        assets.find_sfm_dir()


def test_default_download_target_is_env_then_cache(tmp_path, sfm_copy, monkeypatch, clean_env):
    assert assets.download_sfm(base_url=sfm_copy.as_uri()) == tmp_path / "cache" / "evp-anim" / "sfm"
    monkeypatch.setenv(assets.ENV_VAR, str(tmp_path / "via_env"))
    assert assets.download_sfm(base_url=sfm_copy.as_uri()) == tmp_path / "via_env"
    assert assets.find_sfm_dir() == tmp_path / "via_env"


# ---------------------------------------------------------------------- untrusted servers, interrupts
# Issue 15 row 5: a failing download must leave the user's files in --dest alone, a server that keeps
# streaming must be cut at the pinned size, and an interrupted or killed download leaves no
# temporary file behind.

def _parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _start_server(handler_cls) -> tuple[http.server.ThreadingHTTPServer, str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


class _EndlessHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request with 200 and zeros until the client hangs up (no Content-Length)."""
    sent: list[int] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        n = 0
        try:
            while n < 1 << 30:          # a bound for the test only; the client must stop far earlier
                self.wfile.write(b"\0" * 65536)
                n += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            type(self).sent.append(n)


def test_failing_download_leaves_the_users_files_untouched(tmp_path, sfm_copy, serve, clean_env):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "notes.txt").write_text("my notes")
    (dest / ".hidden").write_bytes(b"mine too")
    shutil.copyfile(sfm_copy / "sfm_shape_3448.bin", dest / "sfm_shape_3448.bin")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in dest.iterdir()}
    (sfm_copy / "sfm_model_contours.json").unlink()   # the server fails part-way (HTTP 404)
    with pytest.raises(EvpError, match="HTTP 404"):
        assets.download_sfm(dest, base_url=serve(sfm_copy))
    for name, (data, mtime) in before.items():
        assert (dest / name).read_bytes() == data and (dest / name).stat().st_mtime_ns == mtime
    assert _parts(dest) == [".hidden"]
    assert not (dest / "sfm_model_contours.json").exists()


def test_endless_stream_is_cut_at_the_pinned_size(tmp_path, clean_env):
    _EndlessHandler.sent = []
    srv, url = _start_server(_EndlessHandler)
    dest = tmp_path / "dest"
    try:
        with pytest.raises(EvpError, match="more than the 248400 bytes") as err:
            assets.download_sfm(dest, base_url=url)      # first file: expression_blendshapes_3448.bin
    finally:
        srv.shutdown()
        srv.server_close()
    assert "\n" not in str(err.value)
    assert list(dest.iterdir()) == []                    # no final file, no temporary file


class _LyingLengthHandler(_EndlessHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(10 ** 12))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(b"\0" * 1024)


def test_announced_oversize_is_refused_before_reading(tmp_path, clean_env):
    srv, url = _start_server(_LyingLengthHandler)
    dest = tmp_path / "dest"
    try:
        with pytest.raises(EvpError, match="announces 1000000000000 bytes"):
            assets.download_sfm(dest, base_url=url)
    finally:
        srv.shutdown()
        srv.server_close()
    assert list(dest.iterdir()) == []


def test_keyboard_interrupt_mid_download_leaves_no_temporary_file(tmp_path, sfm_copy, serve, clean_env):
    dest = tmp_path / "dest"
    seen = []

    def progress(frac):
        seen.append(frac)
        if 0.0 < frac < 1.0 and len(seen) > 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        assets.download_sfm(dest, base_url=serve(sfm_copy), progress=progress)
    assert _parts(dest) == []
    for p in dest.iterdir():                             # only completed, verified files
        assert _sha(p) == assets.SFM_FILES[p.name][0]


class _StallingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files, but stalls half-way through sfm_shape_3448.bin until ``release`` is set."""
    release = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        if name != "sfm_shape_3448.bin":
            return super().do_GET()
        data = (Path(self.directory) / name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            type(self).release.wait(120)


def _cli_download(dest: Path, url: str, tmp_path: Path) -> subprocess.Popen:
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    env.pop(assets.ENV_VAR, None)
    return subprocess.Popen([sys.executable, "-m", "evp_anim.cli", "--quiet", "assets", "download",
                             "--dest", str(dest), "--base-url", url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_part(dest: Path, proc: subprocess.Popen) -> list[str]:
    deadline = time.monotonic() + 120                    # a bound on waiting, not a timing assertion
    while time.monotonic() < deadline and proc.poll() is None:
        parts = [n for n in _parts(dest) if n.startswith(".sfm_shape_3448.bin.") and n.endswith(".evp-part")]
        if parts and (dest / parts[0]).stat().st_size > 0:   # the stalled file, half written
            return parts
        time.sleep(0.05)
    raise AssertionError(f"no temporary download file appeared (exit {proc.poll()})")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_download_leaves_no_temporary_file(tmp_path, sfm_copy, serve, clean_env, sig):
    # SIGTERM (the Blender add-on's Cancel) is caught: exit 143, "interrupted", temporary file
    # removed. SIGKILL cannot be caught: its leftover is removed by the next download.
    _StallingHandler.release = threading.Event()
    handler = functools.partial(_StallingHandler, directory=str(sfm_copy))
    srv, url = _start_server(handler)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "notes.txt").write_text("my notes")
    proc = _cli_download(dest, url, tmp_path)
    try:
        parts = _wait_for_part(dest, proc)
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=120)
    finally:
        _StallingHandler.release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        srv.shutdown()
        srv.server_close()
    assert not (dest / "sfm_shape_3448.bin").exists()
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and err.strip().splitlines()[-1] == "interrupted"
        assert _parts(dest) == []
    else:
        assert proc.returncode == -signal.SIGKILL and _parts(dest) == parts
        assets.download_sfm(dest, base_url=serve(sfm_copy))
        assert _parts(dest) == [] and assets.verify_sfm_dir(dest) == []
    assert (dest / "notes.txt").read_text() == "my notes"


def test_temporary_file_of_a_running_download_is_not_removed(tmp_path, sfm_copy, serve, clean_env):
    dest = tmp_path / "dest"
    dest.mkdir()
    live = dest / f".readme.txt.{os.getppid()}.abc123.evp-part"   # the pid of a live process
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()
    dead = dest / f".readme.txt.{dead_pid}.abc123.evp-part"
    foreign = dest / f".notes.{dead_pid}.abc123.evp-part"       # not an SFM name: not ours
    for p in (live, dead, foreign):
        p.write_bytes(b"x")
    assets.download_sfm(dest, base_url=serve(sfm_copy))
    assert live.exists() and foreign.exists() and not dead.exists()
