"""Who may connect, per session: ordered allow/deny rules and a default, stored beside the
revocation list as ``policy.json`` (the CRL stays the revocation list).

A rule names any of role, name, serial and unique ID; it matches a peer when every field it
names is equal (a rule naming none matches everyone).  The first matching rule decides; when
none matches, the default does.  The file::

    {"format": 1, "default": "allow",
     "rules": [{"action": "deny", "name": "bob"}, {"action": "allow", "role": "client"}]}

Reading is strict: a malformed file is refused with a message naming it, and a running side
keeps the policy it had (see ``paraconnect.tls.PolicyWatcher``).  Writing is atomic.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography import x509

from .._fs import locked, read_public, write_atomic
from ..errors import ConfigError, CredentialError, TrustError
from ._certs import Role, parse_pem_crl
from ._keys import PrivateKey, verify_data
from ._names import check_name, check_unique_id
from ._signer import Signer, as_signer
from ._store import Session, Store

__all__ = [
    "POLICY_FILE",
    "Policy",
    "Rule",
    "crl_number",
    "load_policy",
    "policy_path",
    "policy_warnings",
    "save_policy",
    "sign_policy",
    "update_policy",
    "verify_crl",
    "verify_policy",
    "write_crl_beside",
]

POLICY_FILE = "policy.json"
_FORMAT = 1
_ACTIONS = ("allow", "deny")
_FIELDS = ("role", "name", "serial", "unique_id")


def _norm_serial(value: str) -> str:
    text = value.strip().lower().replace(":", "").removeprefix("0x").lstrip("0") or "0"
    try:
        int(text, 16)
    except ValueError:
        raise ConfigError(
            f"serial {value!r} is not hexadecimal (as 'session show' prints)"
        ) from None
    return text


@dataclass(frozen=True, slots=True)
class Rule:
    action: str
    role: str | None = None
    name: str | None = None
    serial: str | None = None  # lower-case hex, no leading zeros
    unique_id: str | None = None

    @classmethod
    def make(
        cls,
        action: str,
        *,
        role: str | None = None,
        name: str | None = None,
        serial: str | int | None = None,
        unique_id: str | None = None,
    ) -> Rule:
        if action not in _ACTIONS:
            raise ConfigError(f"a policy rule allows or denies, not {action!r}")
        if role is not None:
            parsed = Role.parse(role)
            if parsed is Role.SESSION:
                raise ConfigError("the session certificate never connects: give a peer role")
            role = parsed.value
        if isinstance(serial, int):
            serial = format(serial, "x")
        # A rule for 'bob\n' would never match bob: a deny that silently does nothing.
        if name is not None:
            check_name(name)
        if unique_id is not None:
            check_unique_id(unique_id)
        return cls(
            action,
            role,
            name,
            _norm_serial(serial) if serial is not None else None,
            unique_id,
        )

    def matches(
        self, role: str | None, name: str | None, serial: int | None, unique_id: str | None
    ) -> bool:
        if self.role is not None and self.role != role:
            return False
        if self.name is not None and self.name != name:
            return False
        if self.serial is not None and (serial is None or self.serial != format(serial, "x")):
            return False
        return self.unique_id is None or self.unique_id == unique_id

    @property
    def criteria(self) -> dict[str, str]:
        return {k: v for k in _FIELDS if (v := getattr(self, k)) is not None}

    def describe(self) -> str:
        what = ", ".join(f"{k} {v!r}" for k, v in self.criteria.items()) or "everyone"
        return f"{self.action} {what}"

    def as_dict(self) -> dict[str, str]:
        return {"action": self.action, **self.criteria}


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    default: str = "allow"
    source: str = field(default="(built-in: allow everyone)", compare=False)

    def decide(
        self, role: str | None, name: str | None, serial: int | None, unique_id: str | None
    ) -> tuple[bool, str]:
        """(allowed, why) for a peer identity: the first matching rule, else the default."""
        for index, rule in enumerate(self.rules, 1):
            if rule.matches(role, name, serial, unique_id):
                return rule.action == "allow", f"rule #{index} ({rule.describe()})"
        return self.default == "allow", f"the default ({self.default})"

    def as_dict(self) -> dict[str, object]:
        return {
            "format": _FORMAT,
            "default": self.default,
            "rules": [r.as_dict() for r in self.rules],
        }

    def to_json(self) -> bytes:
        return json.dumps(self.as_dict(), indent=1).encode() + b"\n"

    @classmethod
    def parse(cls, data: bytes, source: object) -> Policy:
        def bad(why: str) -> ConfigError:
            return ConfigError(
                f"policy file {source} is malformed ({why}); fix it, or reset it with "
                "'paraconnect policy remove --all --session S'; a running side keeps the "
                "previous policy meanwhile"
            )

        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise bad(f"not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise bad("not a JSON object")
        if obj.get("format", _FORMAT) != _FORMAT:
            raise bad(f"unknown format {obj.get('format')!r}")
        unknown = set(obj) - {"format", "default", "rules"}
        if unknown:
            raise bad(f"unknown key {sorted(unknown)[0]!r}")
        default = obj.get("default", "allow")
        if default not in _ACTIONS:
            raise bad(f"default must be 'allow' or 'deny', not {default!r}")
        raw_rules = obj.get("rules", [])
        if not isinstance(raw_rules, list):
            raise bad("'rules' is not a list")
        rules = []
        for index, raw in enumerate(raw_rules, 1):
            if not isinstance(raw, dict):
                raise bad(f"rule #{index} is not an object")
            extra = set(raw) - {"action", *_FIELDS}
            if extra:
                raise bad(f"rule #{index} has unknown key {sorted(extra)[0]!r}")
            if not all(isinstance(v, str) for v in raw.values()):
                raise bad(f"rule #{index} has a value that is not a string")
            try:
                rules.append(Rule.make(str(raw.get("action")), **{k: raw.get(k) for k in _FIELDS}))
            except ConfigError as exc:
                raise bad(f"rule #{index}: {exc}") from None
        return cls(tuple(rules), default, str(source))


def policy_path(where: Session | Path) -> Path:
    """The policy file of a session, or the one beside a CRL / in a credentials directory."""
    if isinstance(where, Session):
        return where.path / POLICY_FILE
    if where.suffix in (".pem", ".json"):
        return where.with_name(POLICY_FILE)
    return where / POLICY_FILE


def load_policy(path: Path) -> Policy:
    """The policy in `path`, or allow-everyone when there is none; ConfigError if malformed."""
    if not path.exists():
        return Policy()
    try:
        data = read_public(path, "policy file")
    except CredentialError as exc:
        raise ConfigError(str(exc)) from None
    return Policy.parse(data, path)


def save_policy(path: Path, policy: Policy) -> None:
    write_atomic(path, policy.to_json(), mode=0o644)


def update_policy(session: Session, change: Callable[[Policy], Policy]) -> Policy:
    """Read-modify-write the session's policy under the session lock."""
    path = policy_path(session)
    with locked(session.path / ".lock"):
        current = load_policy(path)
        new = change(current)
        save_policy(path, new)
    return replace(new, source=str(path))


def add_rule(session: Session, rule: Rule, position: int | None = None) -> Policy:
    """Insert `rule` at `position` (1-based; default: last) of the session's policy."""

    def change(current: Policy) -> Policy:
        rules = list(current.rules)
        if position is None:
            rules.append(rule)
        elif 1 <= position <= len(rules) + 1:
            rules.insert(position - 1, rule)
        else:
            raise ConfigError(
                f"position {position} is outside 1..{len(rules) + 1}; see "
                f"'paraconnect policy show --session {session.name}'"
            )
        return replace(current, rules=tuple(rules))

    return update_policy(session, change)


def remove_rule(
    session: Session, *, index: int | None = None, criteria: dict[str, str] | None = None
) -> Policy:
    """Remove rule number `index` (1-based), or every rule with exactly these `criteria`."""

    def change(current: Policy) -> Policy:
        rules = list(current.rules)
        if index is not None:
            if not 1 <= index <= len(rules):
                raise ConfigError(f"the policy has no rule number {index}")
            del rules[index - 1]
        else:
            kept = [r for r in rules if r.criteria != (criteria or {})]
            if len(kept) == len(rules):
                raise ConfigError(
                    "no rule has exactly those fields; see "
                    f"'paraconnect policy show --session {session.name}'"
                )
            rules = kept
        return replace(current, rules=tuple(rules))

    return update_policy(session, change)


def set_default(session: Session, verdict: str) -> Policy:
    """What happens when no rule matches: allow or deny."""
    if verdict not in _ACTIONS:
        raise ConfigError(f"the policy default is allow or deny, not {verdict!r}")
    return update_policy(session, lambda current: replace(current, default=verdict))


def policy_warnings(session: Session, policy: Policy, *, unique_id: str | None = None) -> list[str]:
    """What a user should hear before relying on `policy`: rules naming identities this
    session never issued, and a policy that refuses the owner's own certificates."""
    records = session.records()
    names = {r.name for r in records}
    serials = {r.serial for r in records}
    uids = {r.unique_id for r in records if r.unique_id}
    here = unique_id or Store(session.path.parent.parent).unique_id().value
    uids.add(here)
    out: list[str] = []
    for index, rule in enumerate(policy.rules, 1):
        if rule.name is not None and rule.name not in names:
            out.append(f"rule #{index} names {rule.name!r}, which this session never issued")
        if rule.serial is not None and rule.serial not in serials:
            out.append(f"rule #{index} names serial {rule.serial}, never issued by this session")
        if rule.unique_id is not None and rule.unique_id not in uids:
            out.append(f"rule #{index} names node {rule.unique_id!r}, unknown to this session")
    now = dt.datetime.now(dt.UTC)
    own = [
        r
        for r in records
        if r.key_kept
        and not r.revoked
        and r.unique_id == here
        and r.role in (Role.CLIENT.value, Role.NODE.value)
        and dt.datetime.fromisoformat(r.not_after) > now
    ]
    if own:
        refused = [
            r for r in own if not policy.decide(r.role, r.name, int(r.serial, 16), r.unique_id)[0]
        ]
        locked_out = len(refused) == len(own)
    else:
        # No client certificate of ours yet: would a newly issued one get in?
        locked_out = not policy.decide(Role.CLIENT.value, "\0new", None, here)[0]
    if locked_out:
        out.append(
            "LOCK-OUT: this policy refuses every client certificate of the session owner on this "
            f"node ({here}); you will not be able to connect yourself: add an allow rule for "
            "your own certificate before the deny rule"
        )
    return out


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return 0


def write_crl_beside(path: Path, crl: x509.CertificateRevocationList) -> None:
    """Keep a verified CRL at `path` (a credentials directory's crl.pem), atomically."""
    from cryptography.hazmat.primitives.serialization import Encoding

    write_atomic(path, crl.public_bytes(Encoding.PEM), mode=0o644)


def verify_crl(
    data: bytes | str, ca: x509.Certificate, source: object
) -> x509.CertificateRevocationList:
    """A CRL that arrived from elsewhere (a control channel), with ``load_crl``'s check: it
    must be signed by the session CA `ca`."""
    raw = data.encode() if isinstance(data, str) else data
    crl = parse_pem_crl(raw, source)
    if not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise TrustError(
            f"the revocation list from {source} is not signed by the session CA; it was refused "
            "and the current one stays in force"
        )
    return crl


def sign_policy(policy: Policy, ca_key: PrivateKey | Signer, number: int) -> str:
    """The policy as the session owner hands it to agents: JSON with a version `number` (a
    newer policy has a larger one) and the session key's signature over both."""
    body = {"policy": policy.as_dict(), "number": number}
    signed = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    signature = as_signer(ca_key).sign_data(signed)
    return json.dumps({**body, "signature": base64.b64encode(signature).decode()})


def verify_policy(text: str, ca: x509.Certificate, source: object) -> tuple[Policy, int]:
    """A policy from :func:`sign_policy` that arrived from `source`, checked: signed by the
    session CA `ca`.  TrustError (and nothing applied) otherwise."""

    def refused(why: str) -> TrustError:
        return TrustError(
            f"the policy from {source} {why}; it was refused and the current one stays in force"
        )

    try:
        obj = json.loads(text)
        body = {"policy": obj["policy"], "number": int(obj["number"])}
        signature = base64.b64decode(obj["signature"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise refused("is malformed") from None
    signed = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    if not verify_data(ca.public_key(), signature, signed):
        raise refused("is not signed by the session CA")
    try:
        policy = Policy.parse(json.dumps(body["policy"]).encode(), source)
    except ConfigError as exc:
        raise refused(f"is not a policy ({exc})") from None
    return policy, int(body["number"])
