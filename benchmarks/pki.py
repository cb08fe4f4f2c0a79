"""Time to create a session with a server and a client certificate.

Side by side, in one run: the raw cryptography cost (keys + CA + two leaves, in memory), the
same through paraconnect's store (atomic, fsynced files under a lock), and the whole
`paraconnect session create` + two `paraconnect issue` commands, next to the interpreter's own
start-up. Figures are medians; ratios are to the raw cryptography cost.  Last, certificates
per second signed by a session key in a PKCS#11 token (a SoftHSM2 token made for the run)
against the same key type in a file, as a ratio.

    .venv/bin/python benchmarks/pki.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from paraconnect.pki import KeyType, Store
from paraconnect.pki._certs import Identity, Role, build_ca, build_leaf
from paraconnect.pki._keys import generate_key
from paraconnect.pki._signer import FileSigner, Signer
from paraconnect.pki._token import SOFTHSM2_MODULE, TokenUri, open_token_key

PARACONNECT = str(Path(sys.executable).with_name("paraconnect"))


def median_ms(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def raw(key_type: KeyType) -> None:
    ca_key = generate_key(key_type)
    ca = build_ca(ca_key, "0" * 32, "bench", 30)
    for role in (Role.SERVER, Role.CLIENT):
        build_leaf(
            ca_key, ca, generate_key(key_type).public_key(), Identity("0" * 32, role, "x"), 7
        )


def certs_per_second(signer: Signer, n: int) -> float:
    ca = build_ca(signer, "0" * 32, "bench", 30)
    public = generate_key(KeyType.EC_P256).public_key()
    ident = Identity("0" * 32, Role.CLIENT, "x")
    t0 = time.perf_counter()
    for _ in range(n):
        build_leaf(signer, ca, public, ident, 7)
    return n / (time.perf_counter() - t0)


def token_vs_file(tmp: Path, n: int) -> None:
    """Certificates/s with the session key in a SoftHSM2 token vs in a file, EC P-256 and RSA."""
    print(f"\ncertificates signed per second, key in a PKCS#11 token vs in a file ({n} each):")
    if not Path(SOFTHSM2_MODULE).exists():
        print("  skipped: SoftHSM2 is not installed (scripts/system-deps.sh)")
        return
    (tmp / "tokens").mkdir(parents=True)
    conf = tmp / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp / 'tokens'}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # read once, when the module is first loaded
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin",
                    "1234", "--so-pin", "5678"], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    pin = tmp / "pin"
    pin.write_text("1234")
    pin.chmod(0o600)
    for kt in (KeyType.EC_P256, KeyType.RSA_3072):
        uri = TokenUri.parse(f"pkcs11:token=bench;object={kt.value}").with_query(
            pin_source=f"file:{pin}", module_path=SOFTHSM2_MODULE
        )
        token, _made = open_token_key(uri, kt)
        file_rate = certs_per_second(FileSigner(generate_key(kt)), n)
        token_rate = certs_per_second(token, n)
        print(f"  {kt.value:<10} file {file_rate:>8.0f}/s   token {token_rate:>8.0f}/s   "
              f"token/file {token_rate / file_rate:.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    reps = {KeyType.EC_P256: 30, KeyType.ED25519: 30, KeyType.RSA_3072: 5}
    cli_reps = 3 if args.quick else 7
    if args.quick:
        reps = {k: max(2, v // 5) for k, v in reps.items()}
    tmp = Path(tempfile.mkdtemp(prefix="pc-bench-"))
    counter = iter(range(10**9))
    try:
        print(f"{'key type':<10} {'raw crypto':>12} {'store':>12} {'ratio':>7}"
              f" {'3 commands':>12} {'ratio':>7}")  # fmt: skip
        for kt, n in reps.items():
            store = Store(tmp / f"home-{kt.value}")

            def in_store(kt: KeyType = kt, store: Store = store) -> None:
                s = store.create_session(f"s{next(counter)}", key_type=kt)
                s.issue("server", "srv")
                s.issue("client", "cli")

            raw_ms = median_ms(lambda kt=kt: raw(kt), n)  # type: ignore[misc]
            store_ms = median_ms(in_store, n)
            env = {**os.environ, "PARACONNECT_HOME": str(tmp / f"cli-{kt.value}")}

            def commands(kt: KeyType = kt, env: dict[str, str] = env) -> None:
                name = f"c{next(counter)}"
                for argv in (
                    ["session", "create", name, "--key-type", kt.value],
                    ["issue", "server", "srv", "--session", name],
                    ["issue", "client", "cli", "--session", name],
                ):
                    subprocess.run([PARACONNECT, *argv], env=env, check=True,
                                   stdout=subprocess.DEVNULL)  # fmt: skip

            cli_ms = median_ms(commands, cli_reps)
            print(f"{kt.value:<10} {raw_ms:>10.2f}ms {store_ms:>10.2f}ms {store_ms / raw_ms:>6.1f}x"
                  f" {cli_ms:>10.1f}ms {cli_ms / raw_ms:>6.0f}x")  # fmt: skip

        def python(code: str) -> Callable[[], object]:
            return lambda: subprocess.run([sys.executable, "-c", code], check=True)

        def pc(*argv: str) -> Callable[[], object]:
            return lambda: subprocess.run([PARACONNECT, *argv], check=True,
                                          stdout=subprocess.DEVNULL)  # fmt: skip

        print("\nstart-up, one process (median):")
        empty = median_ms(python("pass"), cli_reps)
        for label, fn in (
            ("python -c pass", python("pass")),
            ("python -c 'import cryptography.x509'", python("import cryptography.x509")),
            ("paraconnect --help", pc("--help")),
            ("paraconnect unique-id", pc("unique-id")),
        ):
            ms = median_ms(fn, cli_reps)
            print(f"  {label:<40} {ms:>8.1f}ms  ({ms / empty:.2f}x bare interpreter)")
        token_vs_file(tmp / "softhsm", 50 if args.quick else 300)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
