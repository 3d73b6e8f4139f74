"""Sign and verify an artifact file or a directory with `model-signing` (an EC key, or a certificate and its chain),
offline: a Sigstore bundle whose DSSE payload lists every covered file's sha256, no transparency log.

What a signature covers: every regular file under the directory, with no default exclusions (not even `.git*`):
a stray file is a finding, never silently accepted. The one exception is the signature file itself
(`SIGNATURE_NAME`), plus what the signer named with `--ignore`; that list is inside the signed payload, so a
verifier cannot be talked into ignoring more.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mdeploy.passes.core.errors import BadInput

SIGNATURE_NAME = "mdeploy.sig"
HASH = "sha256"
_CHUNK = 1 << 20


def signature_path_for(path: Path, signature: Path | None = None) -> Path:
    """Where a signature lives: DIR/mdeploy.sig for a directory, FILE.sig beside a single file, or `signature`."""
    if signature is not None:
        return Path(signature)
    path = Path(path)
    return path / SIGNATURE_NAME if path.is_dir() else path.with_name(path.name + ".sig")


def _hashing_config(ignore: Iterable[str] = (), workers: int | None = None):
    from model_signing import hashing

    return (hashing.Config()
            .set_ignored_paths(paths=[SIGNATURE_NAME, *ignore], ignore_git_paths=False)
            .use_file_serialization(hashing_algorithm=HASH, allow_symlinks=False, max_workers=workers))


def _check_private_key(key: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        data = Path(key).read_bytes()
    except OSError as e:
        raise BadInput(f"{key}: cannot read the private key ({e.strerror})", "pass a PEM private key with --key") from e
    try:
        loaded = serialization.load_pem_private_key(data, password=_password())
    except (ValueError, TypeError) as e:
        raise BadInput(f"{key}: not a PEM private key mdeploy can open ({str(e).splitlines()[0][:120]})",
                       "pass an unencrypted EC private key, or set MDEPLOY_KEY_PASSWORD for an encrypted one; "
                       "`mdeploy keygen` makes a pair") from e
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise BadInput(f"{key}: a {type(loaded).__name__.lstrip('_')} key; model-signing signs with elliptic-curve keys only",
                       "make an EC key (P-256/P-384/P-521): `mdeploy keygen -o DIR` or "
                       "`openssl ecparam -name prime256v1 -genkey -noout -out private.pem`")


def _check_public_key(key: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        loaded = serialization.load_pem_public_key(Path(key).read_bytes())
    except OSError as e:
        raise BadInput(f"{key}: cannot read the public key ({e.strerror})", "pass a PEM public key with --key") from e
    except ValueError as e:
        raise BadInput(f"{key}: not a PEM public key", "pass the public half of the signing key "
                       "(`openssl ec -in private.pem -pubout -out public.pem`)") from e
    if not isinstance(loaded, ec.EllipticCurvePublicKey):
        raise BadInput(f"{key}: not an elliptic-curve public key", "model-signing verifies EC keys only")


def _password() -> bytes | None:
    value = os.environ.get("MDEPLOY_KEY_PASSWORD")
    return value.encode() if value else None


def sign_path(path: Path, signature: Path, *, key: Path, cert: Path | None = None, chain: Iterable[Path] = (),
              ignore: Iterable[str] = (), workers: int | None = None) -> None:
    """Sign `path` (a file or a directory) with `key` (and `cert` with its `chain`, when given) into `signature`."""
    from model_signing import signing

    _check_private_key(key)
    config = signing.Config().set_hashing_config(_hashing_config(ignore, workers))
    if cert is not None:
        pw = _password()
        if pw is not None:
            raise BadInput("certificate signing takes an unencrypted private key", "unset MDEPLOY_KEY_PASSWORD")
        config = config.use_certificate_signer(private_key=key, signing_certificate=cert, certificate_chain=list(chain))
    else:
        config = config.use_elliptic_key_signer(private_key=key, password=os.environ.get("MDEPLOY_KEY_PASSWORD") or None)
    try:
        config.sign(Path(path), Path(signature))
    except (ValueError, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        raise BadInput(f"model-signing refused to sign {path}: {str(e).splitlines()[0][:200]}",
                       "check the key, the certificate and that no symlink is under the path") from e


@dataclass
class Finding:
    """One reason a verification failed: `cause` (a fixed word for CI), the file it concerns, and details."""

    cause: str  # modified | added | removed | wrong-key | bad-signature | unsigned | rollback | expired | manifest | ...
    file: str | None
    detail: str

    def to_dict(self) -> dict:
        return {"cause": self.cause, "file": self.file, "detail": self.detail}


@dataclass
class SignatureCheck:
    """The signature's verdict: the signed files and their digests when it verified, else the findings."""

    signature: Path
    signed: dict[str, str] = field(default_factory=dict)  # relative path -> sha256 (hex), from the verified payload
    ignored: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def _payload(signature: Path) -> dict:
    bundle = json.loads(Path(signature).read_text())
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))


def _resources(statement: dict) -> tuple[dict[str, str], list[str]]:
    pred = statement.get("predicate", {})
    signed = {r["name"]: r["digest"] for r in pred.get("resources", [])}
    return signed, list(pred.get("serialization", {}).get("ignore_paths", []))


def signed_files(signature: Path) -> tuple[dict[str, str], list[str]]:
    """The files a signature lists (relative path -> sha256) and its ignore list. Trust it only after verify_path."""
    return _resources(_payload(signature))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _present(path: Path, ignored: Iterable[str]) -> dict[str, Path]:
    """The files a verifier sees under `path`, by the name model-signing gives them."""
    path = Path(path)
    if path.is_file():
        return {".": path}  # model-signing names a single signed file "."
    skip = {SIGNATURE_NAME, *ignored}
    found = {}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if any(rel == s or rel.startswith(s.rstrip("/") + "/") for s in skip):
            continue
        if p.is_file() or p.is_symlink():
            found[rel] = p
    return found


def _content_findings(path: Path, signed: dict[str, str], ignored: list[str]) -> list[Finding]:
    """Name every file that differs from the (verified) payload: modified, added or removed."""
    present = _present(path, ignored)
    if Path(path).is_file():
        signed = {".": d for d in signed.values()} if len(signed) == 1 else signed
    findings = []
    for rel in sorted(set(signed) - set(present)):
        findings.append(Finding("removed", rel, "signed file is missing"))
    for rel in sorted(set(present) - set(signed)):
        findings.append(Finding("added", rel, "file is not covered by the signature"))
    for rel in sorted(set(present) & set(signed)):
        actual = "symlink" if present[rel].is_symlink() else file_sha256(present[rel])
        if actual != signed[rel]:
            findings.append(Finding("modified", Path(path).name if rel == "." else rel, f"sha256 {actual[:16]}… differs from the signed {signed[rel][:16]}…"))
    return findings


def verify_path(path: Path, signature: Path, *, key: Path | None = None, chain: Iterable[Path] = (),
                workers: int | None = None) -> SignatureCheck:
    """Verify `path` against `signature` with a public `key`, or with a certificate `chain` (the root of trust).
    Hashes every file once; on a mismatch, names each file that differs."""
    from model_signing import verifying

    result = SignatureCheck(Path(signature))
    if not Path(signature).is_file():
        result.findings.append(Finding("unsigned", Path(signature).name, f"no signature at {signature}"))
        return result
    if key is not None:
        _check_public_key(key)
        config = verifying.Config().use_elliptic_key_verifier(public_key=key)
    else:
        config = verifying.Config().use_certificate_verifier(certificate_chain=list(chain))
    config = config.set_hashing_config(_hashing_config(workers=workers))
    try:
        config.verify(Path(path), Path(signature))
    except Exception as e:  # noqa: BLE001 - model-signing raises ValueError and the protobuf/crypto layers' own types
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if text.startswith("Signature mismatch"):
            # the envelope verified before model-signing compared digests, so its payload is authentic
            signed, ignored = _resources(_payload(signature))
            result.findings.extend(_content_findings(path, signed, ignored)
                                   or [Finding("modified", None, text[:300])])
        elif "key mismatch" in text.lower() or "public key" in text.lower():
            result.findings.append(Finding("wrong-key", Path(signature).name, "signed with another key than the one given"))
        else:
            result.findings.append(Finding("bad-signature", Path(signature).name, f"signature does not verify: {text[:200]}"))
        return result
    result.signed, result.ignored = _resources(_payload(signature))
    return result
