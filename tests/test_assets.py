"""SFM assets: lookup order, download over http:// and file:// with sha256 checks, failure cleanup."""

import functools
import hashlib
import http.server
import shutil
import socket
import threading
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


def test_existing_wrong_file_is_replaced(tmp_path, sfm_copy, serve, clean_env):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "ibug_to_sfm.txt").write_text("tampered")
    assets.download_sfm(dest, base_url=serve(sfm_copy))
    assert _sha(dest / "ibug_to_sfm.txt") == assets.SFM_FILES["ibug_to_sfm.txt"][0]


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
