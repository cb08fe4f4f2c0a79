"""Issue 12 item 12: node binding is said to be what it is, a self-check.  The unique ID is what
the peer claims; a thief who sets PARACONNECT_UNIQUE_ID to the CN connects with a copied
certificate.  The README's security levels, `paraconnect issue --help` and `paraconnect debug
creds` (the real commands) say so: it stops a copied certificate being used by accident or by a
careless colleague, not by an attacker who has the key."""

from __future__ import annotations

import re
from pathlib import Path

from paraconnect.pki import Session

README = Path(__file__).parent.parent / "README.md"
SELF_CHECK = "self-check"
THIEF = "PARACONNECT_UNIQUE_ID"
LIMIT = "not by an attacker who has the key"
ACCIDENT = "by accident or by a careless colleague"


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_readme_says_node_binding_is_a_self_check() -> None:
    text = _flat(README.read_text())
    assert "Node binding is a self-check." in text
    assert f"a thief who sets `{THIEF}` to the certificate's CN connects with a copied" in text
    assert ACCIDENT in text and LIMIT in text
    # The old promise is gone: a copied certificate does not "fail on any other machine".
    assert "a copied certificate fails on any other machine" not in text


def test_issue_help_says_node_binding_is_a_self_check(cli: object) -> None:
    r = cli("issue", "--help")  # type: ignore[operator]
    assert r.returncode == 0, r.stderr
    text = _flat(r.stdout)
    assert "Node binding is a self-check" in text
    assert f"a thief who sets {THIEF} to the CN connects with a copied certificate" in text
    assert ACCIDENT in text and LIMIT in text


def test_debug_creds_says_what_node_binding_stops(
    cli: object, session: Session, tmp_path: Path
) -> None:
    node = "node-7"
    session.issue("client", "alice", unique_id=node, out=tmp_path / "c")
    for where, env in (("bound", node), ("copied", "elsewhere")):
        r = cli("debug", "creds", str(tmp_path / "c"), env={THIEF: env})  # type: ignore[operator]
        text = _flat(r.stdout)
        line = next(ln for ln in r.stdout.splitlines() if "unique-id" in ln)
        assert SELF_CHECK in text and ACCIDENT in text and LIMIT in text, (where, r.stdout)
        assert THIEF in text, (where, line)
