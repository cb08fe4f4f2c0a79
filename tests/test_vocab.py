"""One vocabulary: the panel's tokens.ts, the REST docs and every Python front end name only the
server states, levels, key types, kinds, launchers and modes that paraconnect.vocab defines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from paraconnect import vocab
from paraconnect.vocab import FINAL_STATES, KeyType, Mode, SecurityLevel, ServerState, choices

REPO = Path(__file__).resolve().parent.parent
TOKENS = (REPO / "labextension" / "src" / "tokens.ts").read_text()
HUB_API = (REPO / "docs" / "hub-api.md").read_text()

FAMILIES: dict[str, set[str]] = {
    "server state": set(choices(ServerState)),
    "security level": set(choices(SecurityLevel)),
    "key type": set(choices(KeyType)),
    "kind": set(vocab.KINDS),
    "launcher": set(vocab.LAUNCHERS),
    "mode": set(choices(Mode)),
}


def _ts_array(name: str) -> list[str]:
    match = re.search(rf"export const {name} = \[([^\]]*)\]", TOKENS)
    assert match, f"tokens.ts has no array {name}"
    return re.findall(r"'([^']*)'", match.group(1))


def _ts_record_keys(name: str) -> set[str]:
    match = re.search(rf"export const {name}\b[^=]*= \{{([^}}]*)\}}", TOKENS)
    assert match, f"tokens.ts has no record {name}"
    return set(re.findall(r"^\s*'?([\w-]+)'?\s*:", match.group(1), re.M))


@pytest.mark.parametrize(
    ("ts_name", "family", "exact"),
    [
        ("KEY_TYPES", "key type", True),
        ("LEVELS", "security level", True),
        ("SERVER_KINDS", "kind", True),
        ("MODES", "mode", True),
        # The panel's launch form offers the launchers the hub runs itself; 'manual' is its
        # "Copy agent command" button.
        ("LAUNCHERS", "launcher", False),
    ],
)
def test_tokens_arrays_name_only_what_python_defines(
    ts_name: str, family: str, exact: bool
) -> None:
    values = _ts_array(ts_name)
    assert len(values) == len(set(values)), f"{ts_name} repeats a value: {values}"
    unknown = set(values) - FAMILIES[family]
    assert not unknown, f"tokens.ts {ts_name} names {family}s Python does not define: {unknown}"
    if exact:
        assert set(values) == FAMILIES[family], f"tokens.ts {ts_name} lacks some: {values}"


def test_tokens_state_badges_cover_exactly_the_server_states() -> None:
    assert _ts_record_keys("STATE_TONE") == FAMILIES["server state"]
    final = re.search(r"export const FINAL_STATES = new Set\(\[([^\]]*)\]\)", TOKENS)
    assert final, "tokens.ts has no FINAL_STATES"
    assert set(re.findall(r"'([^']*)'", final.group(1))) == set(FINAL_STATES)


def test_hub_api_doc_names_only_defined_states_and_defaults() -> None:
    paragraph = HUB_API[HUB_API.index("`state`: `submitted`") :]
    paragraph = paragraph[: paragraph.index("\n\n")]
    before_final_note = paragraph.split("(`stopped` and")[0]
    named = set(re.findall(r"`(\w+)`", before_final_note)) - {"state"}
    assert named == FAMILIES["server state"], named ^ FAMILIES["server state"]
    finals = set(re.findall(r"`(\w+)`", paragraph.split("(`stopped` and", 1)[1].split(")")[0]))
    assert finals | {"stopped"} == set(FINAL_STATES)
    for field, family in [
        ("key_type", "key type"),
        ("level", "security level"),
        ("state", "server state"),
        ("mode", "mode"),
        ("launcher", "launcher"),
    ]:
        for default in re.findall(rf'`{field}`="([^"]*)"', HUB_API):
            assert default in FAMILIES[family], f"docs/hub-api.md: {field}={default!r}"


def test_hub_api_doc_lists_exactly_the_registered_launchers_and_their_options() -> None:
    """docs/hub-api.md's launcher table (GET /hub) follows paraconnect.servers' registry."""
    from paraconnect.servers import launcher_entries

    table = HUB_API[HUB_API.index("| launcher | `launcher_options`") :].split("\n\n")[0]
    rows = {
        m.group(1): set(re.findall(r"`(\w+)`", m.group(2).split("(and")[0]))
        for m in re.finditer(r"^\| `(\w+)` \| (.*) \|$", table, re.M)
    }
    registered = {e.name: {o.key for o in e.options} for e in launcher_entries()}
    assert set(rows) == set(registered) == FAMILIES["launcher"], rows
    for name, keys in rows.items():
        assert keys == registered[name], f"docs/hub-api.md: {name} options {keys}"
    bold = {
        m for row in re.findall(r"^\|.*$", table, re.M) for m in re.findall(r"\*\*`(\w+)`", row)
    }
    required = {o.key for e in launcher_entries() for o in e.options if o.required}
    assert bold == required, bold ^ required


def test_the_panel_names_launchers_only_as_a_fallback() -> None:
    """The launch form's launchers come from GET /hub: besides tokens.ts's fallback, no panel
    source spells a launcher list of its own."""
    for path in sorted((REPO / "labextension" / "src").glob("*.ts")):
        if path.name == "tokens.ts":
            continue
        for match in re.finditer(r"\[([^\[\]]*)\]", path.read_text()):
            named = set(re.findall(r"'([\w-]+)'", match.group(1))) & FAMILIES["launcher"]
            assert len(named) < 2, f"{path.name} lists launchers {named}: read GET /hub"


def _string_collections(tree: ast.AST) -> list[tuple[int, list[str]]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.List | ast.Tuple | ast.Set) or len(node.elts) < 2:
            continue
        words = [e.value for e in node.elts if isinstance(e, ast.Constant)]
        if len(words) == len(node.elts) and all(isinstance(w, str) for w in words):
            found.append((node.lineno, words))
    return found


def test_no_front_end_retypes_the_vocabulary() -> None:
    """A list, tuple or set of two or more words of one family written out in the package (not
    in vocab.py) is a second source: it drifts (the panel once listed states that never
    existed). Use paraconnect.vocab instead."""
    offenders = []
    for path in sorted((REPO / "paraconnect").rglob("*.py")):
        if path.name == "vocab.py":
            continue
        for line, words in _string_collections(ast.parse(path.read_text())):
            for family, members in FAMILIES.items():
                if len(set(words) & members) >= 2:
                    offenders.append(f"{path.relative_to(REPO)}:{line}: {family}s {words}")
    assert not offenders, "\n".join(offenders)


def test_the_checker_catches_a_retyped_state_list() -> None:
    bad = 'FINAL = {"stopped", "failed", "lost"}\n'
    hits = [w for _, w in _string_collections(ast.parse(bad))]
    assert hits and len(set(hits[0]) & FAMILIES["server state"]) >= 2


def test_the_panel_opens_as_web_apps_exactly_the_web_kinds() -> None:
    """The card's "Open" and the launcher's tiles follow tokens.ts WEB_KINDS; srv.open()
    follows vocab.WEB_KINDS: one list, or a kind opens in the panel and not in a notebook."""
    assert _ts_array("WEB_KINDS") == list(vocab.WEB_KINDS)
