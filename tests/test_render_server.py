"""The built-in render server over real sockets: protocol, files, errors, clients, streaming.

One server subprocess (`python -m paraconnect.render`, EGL through Mesa here) serves the module.
"""

from __future__ import annotations

import functools
import io
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from PIL import Image

from paraconnect.errors import ConfigError, NetworkError, ProtocolError
from paraconnect.render import RemoteRenderError, RenderClient, main, serve
from paraconnect.render import _protocol as P


@contextmanager
def start_server(log: Path, *args: str) -> Iterator[int]:
    """A real server process; yields its port once it says it listens."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "paraconnect.render", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "paraconnect-render listening on 127.0.0.1:" in line, log.read_text()
        yield int(line.rsplit(":", 1)[1])
        assert proc.poll() is None, f"the server died: {log.read_text()}"
    finally:
        proc.terminate()
        proc.wait(15)
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with start_server(tmp_path_factory.mktemp("render") / "server.log", "--size", "160x120") as p:
        yield p


@pytest.fixture
def client(port: int) -> Iterator[RenderClient]:
    with RenderClient(port=port, timeout=30) as c:
        yield c


def image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


# --- raw protocol over a real socket --------------------------------------------------------


class Raw:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.decoder = P.FrameDecoder()

    def send(self, header: dict[str, Any]) -> None:
        self.sock.sendall(P.encode_message(header))

    def recv(self) -> P.Message | None:
        while (msg := self.decoder.next_message()) is None:
            data = self.sock.recv(65536)
            if not data:
                self.decoder.eof()
                return None
            self.decoder.feed(data)
        return msg

    def closed(self) -> bool:
        return self.recv() is None

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(port: int) -> Iterator[Raw]:
    conn = Raw(port)
    yield conn
    conn.close()


def test_hello_then_errors_keep_the_connection(raw: Raw) -> None:
    raw.send({"op": "hello", "v": 1, "id": 1})
    hello = raw.recv()
    assert hello is not None and hello.header["op"] == "hello" and hello.header["v"] == 1
    assert hello.header["window"] == "vtkEGLRenderWindow"
    assert hello.header["formats"] == ["jpeg", "png"]

    raw.send({"op": "teleport", "id": 2})
    err = raw.recv()
    assert err is not None
    assert err.header == {
        "op": "error",
        "id": 2,
        "kind": "protocol",
        "fatal": False,
        "message": err.header["message"],
    }
    assert "unknown op 'teleport'" in err.header["message"]

    raw.sock.sendall(P.PREFIX.pack(5, 0) + b"nope!")
    err = raw.recv()
    assert (
        err is not None
        and err.header["fatal"] is False
        and "not UTF-8 JSON" in err.header["message"]
    )

    raw.send({"op": "render", "format": "png", "id": "r"})
    frame = raw.recv()
    assert frame is not None and frame.header["op"] == "frame" and frame.header["id"] == "r"
    assert image(frame.payload).size == (160, 120)

    raw.send({"op": "bye", "id": 3})
    bye = raw.recv()
    assert bye is not None and bye.header == {"op": "ok", "id": 3}
    assert raw.closed()


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (P.encode_message({"op": "hello", "v": 2}), "protocol version 2 is not spoken here"),
        (P.encode_message({"op": "render"}), "the first message must be"),
        (P.encode_message({"op": "hello"}), "integer protocol version"),
        (P.PREFIX.pack(P.MAX_HEADER + 1, 0), "over the 65536-byte limit"),
        (P.PREFIX.pack(2, 10) + b"{}", "requests are JSON headers only"),
        (b"GET / HTTP/1.1\r\n\r\n", "does not speak paraconnect's render protocol"),
    ],
)
def test_fatal_errors_close_the_connection(raw: Raw, first: bytes, message: str) -> None:
    raw.sock.sendall(first)
    err = raw.recv()
    assert err is not None and err.header["op"] == "error" and err.header["fatal"] is True
    assert message in err.header["message"]
    assert raw.closed()


def test_a_truncated_frame_or_a_vanished_client_leaves_the_server_up(port: int) -> None:
    cut = Raw(port)
    cut.sock.sendall(P.encode_message({"op": "hello", "v": 1})[:7])
    cut.close()
    streaming = Raw(port)
    streaming.send({"op": "hello", "v": 1})
    streaming.recv()
    streaming.send({"op": "stream", "fps": 0, "spin": 5})
    streaming.recv()
    streaming.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    streaming.close()  # a reset in the middle of a stream
    with RenderClient(port=port) as c:
        assert c.render().width == 160


# --- the client ----------------------------------------------------------------------------


def test_render_jpeg_and_png(client: RenderClient, tmp_path: Path) -> None:
    info = client.load("sphere", triangles=2000)
    assert info["kind"] == "vtkPolyData" and 1900 <= info["triangles"] <= 2200
    client.resize(200, 100)
    frame = client.render(quality=70)
    assert frame.format == "jpeg" and frame.data[:2] == b"\xff\xd8"
    assert (frame.width, frame.height) == (200, 100) and image(frame.data).size == (200, 100)
    assert frame.render_ms > 0 and frame.encode_ms > 0 and frame.number >= 1
    client.resize(640, 480)
    plain, optimized = client.render(quality=85), client.render(quality=85, optimize=True)
    assert optimized.data[:2] == b"\xff\xd8" and len(optimized.data) < len(plain.data)
    client.resize(200, 100)
    png = client.save_png(tmp_path / "out.png")
    assert png.format == "png" and (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert image(png.data).size == (200, 100)


def write_datasets(folder: Path) -> dict[str, int]:
    """Small files in each format, written by VTK's own writers; returns points per file."""
    from vtkmodules.vtkFiltersCore import vtkAppendFilter
    from vtkmodules.vtkFiltersSources import vtkSphereSource
    from vtkmodules.vtkImagingCore import vtkRTAnalyticSource
    from vtkmodules.vtkIOLegacy import vtkPolyDataWriter
    from vtkmodules.vtkIOXML import (
        vtkXMLImageDataWriter,
        vtkXMLPolyDataWriter,
        vtkXMLUnstructuredGridWriter,
    )

    sphere = vtkSphereSource()
    sphere.SetThetaResolution(12)
    sphere.SetPhiResolution(12)
    sphere.Update()
    grid = vtkAppendFilter()
    grid.SetInputConnection(sphere.GetOutputPort())
    wavelet = vtkRTAnalyticSource()
    wavelet.SetWholeExtent(-4, 4, -4, 4, -4, 4)
    points = sphere.GetOutput().GetNumberOfPoints()
    written = {}
    for name, writer, source, n in [
        ("legacy.vtk", vtkPolyDataWriter(), sphere, points),
        ("poly.vtp", vtkXMLPolyDataWriter(), sphere, points),
        ("grid.vtu", vtkXMLUnstructuredGridWriter(), grid, points),
        ("image.vti", vtkXMLImageDataWriter(), wavelet, 9 * 9 * 9),
    ]:
        writer.SetInputConnection(source.GetOutputPort())
        writer.SetFileName(str(folder / name))
        assert writer.Write() == 1
        written[name] = n
    return written


def test_load_each_file_format(client: RenderClient, tmp_path: Path) -> None:
    for name, points in write_datasets(tmp_path).items():
        info = client.load(path=str(tmp_path / name))
        assert info["points"] == points, name
        assert info["name"] == str(tmp_path / name)
        frame = image(client.render(format="png").data).convert("L")
        lo, hi = frame.getextrema()
        assert hi - lo > 30, f"{name} rendered a blank picture"
    assert "RTData" in client.load(path=str(tmp_path / "image.vti"))["arrays"]


def test_errors_are_one_line_and_keep_the_server_up(client: RenderClient, tmp_path: Path) -> None:
    (tmp_path / "junk.vtp").write_text("this is not XML")
    (tmp_path / "notes.txt").write_text("hello")
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"path": str(tmp_path / "missing.vtu")}, ConfigError, "no such file"),
        ({"path": str(tmp_path / "notes.txt")}, ConfigError, "unknown file type '.txt'"),
        ({"path": str(tmp_path / "junk.vtp")}, RemoteRenderError, "no data could be read"),
        ({"dataset": "teapot"}, ConfigError, "unknown dataset 'teapot'"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message) as info:
            client.load(**kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="bad size 0x10"):
        client.resize(0, 10)
    with pytest.raises(ConfigError, match="bad size 10x9000"):
        client.resize(10, 9000)
    with pytest.raises(ConfigError, match="unknown image format 'gif'"):
        client.render(format="gif")
    client.load("cone")
    assert client.render().width == 160


def test_two_clients_at_once(port: int) -> None:
    results: dict[str, list[tuple[int, int]]] = {}
    failures: list[BaseException] = []

    def work(name: str, size: tuple[int, int]) -> None:
        try:
            with RenderClient(port=port) as c:
                c.load(name)
                c.resize(*size)
                sizes = []
                for _ in range(4):
                    c.camera(azimuth=15)
                    f = c.render()
                    sizes.append(image(f.data).size)
                results[name] = sizes
        except BaseException as exc:
            failures.append(exc)

    threads = [
        threading.Thread(target=work, args=("cone", (120, 90))),
        threading.Thread(target=work, args=("wavelet", (90, 120))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert results == {"cone": [(120, 90)] * 4, "wavelet": [(90, 120)] * 4}


def test_stream_spin_changes_and_stop(client: RenderClient) -> None:
    client.load("cone")
    client.stream(fps=0, spin=20)
    frames = [client.next_frame(timeout=20) for _ in range(4)]
    assert all(f.stream for f in frames)
    assert [f.number for f in frames] == sorted(f.number for f in frames)
    assert len({f.data for f in frames}) == 4, "a spinning stream repeated a frame"
    unread = client.stop()
    assert all(f.stream and f.number > frames[-1].number for f in unread)
    # Without spin, a frame comes on start and on each change, and nothing in between.
    client.stream(fps=50)
    client.next_frame(timeout=20)
    with pytest.raises(TimeoutError):
        client.next_frame(timeout=0.5)
    client.camera(elevation=30)
    assert client.next_frame(timeout=20).stream
    client.stop()


def test_library_entry_point_on_a_unix_socket(tmp_path: Path) -> None:
    from paraconnect.render import ServerOptions

    path = tmp_path / "render.sock"
    with anyio.from_thread.start_blocking_portal() as portal:
        options = ServerOptions(width=64, height=48, encoders=1)
        future, where = portal.start_task(functools.partial(serve, unix=str(path), options=options))
        assert where == f"unix:{path}"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with RenderClient(unix=path) as c:
            c.load("sphere", triangles=500)
            assert image(c.render().data).size == (64, 48)
        future.cancel()


def test_refuses_to_listen_beyond_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", "0.0.0.0", "--port", "0"]) == 2  # noqa: S104
    err = capsys.readouterr().err
    assert "refusing to listen on '0.0.0.0'" in err and err.count("\n") == 1


def test_client_errors_are_clear(port: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(NetworkError, match=f"cannot reach the render server at 127.0.0.1:{free}"):
        RenderClient(port=free).open()
    with pytest.raises(ConfigError, match="TCP port, its Unix socket path, or a connected socket"):
        RenderClient()
    with RenderClient(port=port) as c:
        with pytest.raises(ProtocolError, match="unknown op"):
            c._call(c._client._request, {"op": "warp"})
        assert c.render().width == 160


def test_data_root_confines_paths(tmp_path: Path) -> None:
    from paraconnect.render._readers import open_source, resolve

    root = tmp_path / "data"
    root.mkdir()
    (root / "in.vtp").write_text("<VTKFile/>")
    (tmp_path / "out.vtp").write_text("<VTKFile/>")
    (root / "link.vtp").symlink_to(tmp_path / "out.vtp")
    assert resolve("in.vtp", root) == (root / "in.vtp").resolve()
    for escape in ("../out.vtp", str(tmp_path / "out.vtp"), "link.vtp"):
        with pytest.raises(ConfigError, match="outside the server's data root"):
            open_source(escape, root)


def test_inherited_socketpair_serves_one_client_then_exits(tmp_path: Path) -> None:
    """The agent's preferred private leg: half of a socketpair handed to the program."""
    ours, theirs = socket.socketpair()
    with (tmp_path / "server.log").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "paraconnect.render", "--fd", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    theirs.close()
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("paraconnect-render listening on fd:")
        with RenderClient(sock=ours) as c:
            c.load("cone")
            assert image(c.render().data).size == (640, 480)
        assert proc.wait(20) == 0, (tmp_path / "server.log").read_text()
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_inherited_listening_socket(tmp_path: Path) -> None:
    from paraconnect.render import ServerOptions

    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "s"))
    listener.listen()
    with anyio.from_thread.start_blocking_portal() as portal:
        options = ServerOptions(width=32, height=32, encoders=1)
        future, where = portal.start_task(
            functools.partial(serve, fd=listener.detach(), options=options)
        )
        assert where.startswith("fd:")
        for _ in range(2):
            with RenderClient(unix=tmp_path / "s") as c:
                assert image(c.render().data).size == (32, 32)
        future.cancel()
