"""srv.open(): a web server's app inline in a notebook, through the server extension's proxy
under Jupyter's base URL (``/user/<name>/`` under JupyterHub)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from paraconnect._api_web import AppFrame, app_url, check_web, jupyter_base_url
from paraconnect.errors import ConfigError, NetworkError
from paraconnect.vocab import JUPYTER_BASE_URL_ENV, WEB_KINDS


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(markup: str) -> dict[str, dict[str, str | None]]:
    parser = _Tags()
    parser.feed(markup)
    return {tag: attrs for tag, attrs in parser.tags}


def test_the_frame_is_the_proxy_under_the_hubs_user_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(JUPYTER_BASE_URL_ENV, "/user/alice/")
    url = app_url("srv-1")
    assert url == "/user/alice/paraconnect/proxy/srv-1/"
    tags = _tags(AppFrame("srv-1", url)._repr_html_())
    frame, link = tags["iframe"], tags["a"]
    assert frame["src"] == link["href"] == url
    assert frame["width"] == "100%" and frame["height"] == "600"
    # The link carries the id the JupyterLab extension turns into a tab (not a new page).
    assert link["data-paraconnect-app"] == "srv-1" and link["target"] == "_blank"
    # A sandbox that lets the app's scripts reach back through the same-origin proxy only.
    assert set((frame["sandbox"] or "").split()) >= {"allow-scripts", "allow-same-origin"}
    assert "allow-top-navigation" not in (frame["sandbox"] or "")


def test_the_base_url_without_the_extension_and_hostile_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(JUPYTER_BASE_URL_ENV, raising=False)
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/bob")
    assert jupyter_base_url() == "/user/bob/"
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX")
    assert app_url("a/b?c") == "/paraconnect/proxy/a%2Fb%3Fc/"  # one path segment, always
    markup = AppFrame('x"><script>', "/p/")._repr_html_()
    assert "<script>" not in markup
    monkeypatch.setenv(JUPYTER_BASE_URL_ENV, "http://elsewhere/")
    with pytest.raises(ConfigError, match=JUPYTER_BASE_URL_ENV):
        jupyter_base_url()
    with pytest.raises(ConfigError, match="height in pixels"):
        AppFrame("x", "/p/", height=10**6)


def test_open_refuses_what_is_not_a_connected_web_app() -> None:
    builtin = {"id": "s1", "kind": "builtin", "state": "connected", "local": "127.0.0.1:9"}
    with pytest.raises(ConfigError, match=r"open\(\) shows a web app .*use view\(\)"):
        check_web(builtin)
    waiting = {"id": "s2", "kind": WEB_KINDS[0], "state": "waiting", "local": None}
    with pytest.raises(NetworkError, match="s2 is waiting, not connected"):
        check_web(waiting)
    check_web({**waiting, "state": "connected", "local": "127.0.0.1:9"})
