"""`sign`, `verify`, `release` and `keygen`: signed over-the-air releases of model artifacts for edge devices.

A release directory is the files, an OTA manifest (passes/release/manifest.py) and one model-signing signature
over both (passes/release/signing.py). `verify` checks the signature (naming each file that differs), then the
manifest: that it lists exactly the signed files with the signed digests, that it has not expired, and that its
sequence is above the device's last installed one.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import atomic_output, ensure_writable, safe_component, storage_errors
from mdeploy.passes.release.manifest import (
    FILES_DIR,
    MANIFEST_NAME,
    FileEntry,
    OtaManifest,
    check_version,
    file_format,
    iso,
    parse_duration,
    parse_rollout,
    parse_time,
    savedmodel_dirs,
)
from mdeploy.passes.release.signing import (
    SIGNATURE_NAME,
    Finding,
    file_sha256,
    sign_path,
    signature_path_for,
    signed_files,
    verify_path,
)


def _existing(path: Path, what: str = "PATH") -> Path:
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{path}: no such file or directory", f"pass an artifact file or a directory as {what}")
    if path.is_symlink() or (path.is_dir() and any(p.is_symlink() for p in path.rglob("*"))):
        raise BadInput(f"{path}: holds a symbolic link; a signature covers real files only",
                       "copy the files the link points to in its place")
    return path


def sign(path: Path, *, key: Path, cert: Path | None = None, chain: tuple[Path, ...] = (), ignore: tuple[str, ...] = (),
         signature: Path | None = None, force: bool = False) -> dict[str, Any]:
    """Sign an artifact file or a directory; the signature goes to DIR/mdeploy.sig or FILE.sig (or `signature`)."""
    path = _existing(path)
    for pattern in ignore:
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise BadInput(f"--ignore {pattern!r} must be a path inside {path}", "give it relative to the signed directory")
    sig = signature_path_for(path, signature)
    with atomic_output(sig, force=force) as tmp:
        sign_path(path, tmp, key=key, cert=cert, chain=chain, ignore=ignore)
    signed, ignored = signed_files(sig)  # what the signature covers, read back: the list a verifier enforces
    return {"path": str(path), "signature": str(sig), "files": len(signed), "ignored": [i for i in ignored if i != SIGNATURE_NAME],
            "method": "certificate" if cert else "key"}


@dataclass
class Verdict:
    """Truthy when the release (or signed artifact) may be installed."""

    path: str
    signature: str
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    manifest: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.findings

    def __bool__(self) -> bool:
        return self.ok

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "path": self.path, "signature": self.signature, "files": self.files,
                "manifest": self.manifest, "findings": [f.to_dict() for f in self.findings]}


def verify(path: Path, *, key: Path | None = None, chain: tuple[Path, ...] = (), last_sequence: int | None = None,
           at: str | None = None, signature: Path | None = None, workers: int | None = None) -> Verdict:
    """Verify a signed artifact or release directory; with an OTA manifest also its sequence and expiry."""
    path = _existing(path)
    if key is None and not chain:
        raise BadInput("verify needs a public key (--key) or a certificate chain (--cert-chain)",
                       "pass the public key that matches the signing key")
    sig = signature_path_for(path, signature)
    check = verify_path(path, sig, key=key, chain=chain, workers=workers)
    verdict = Verdict(str(path), str(sig), list(check.findings), len(check.signed))
    manifest_file = path / MANIFEST_NAME if path.is_dir() else None
    if manifest_file is None or not manifest_file.is_file():
        if last_sequence is not None and check.ok:
            verdict.findings.append(Finding("manifest", MANIFEST_NAME,
                                            "--last-sequence given, but there is no OTA manifest to read a sequence from"))
        return verdict
    if not check.ok:
        return verdict  # an unverified manifest says nothing
    manifest = OtaManifest.from_json(manifest_file.read_text(), str(manifest_file))
    verdict.manifest = {"model_id": manifest.model_id, "version": manifest.version, "sequence": manifest.sequence,
                        "expires": manifest.expires, "hardware_class": manifest.hardware_class}
    verdict.findings.extend(manifest_findings(manifest, check.signed, last_sequence,
                                              parse_time(at, "--at") if at else datetime.now(UTC)))
    return verdict


def manifest_findings(manifest: OtaManifest, signed: dict[str, str], last_sequence: int | None,
                      now: datetime) -> list[Finding]:
    """What is wrong with a (signature-verified) manifest: files that disagree with the signature, a rollback,
    an expiry."""
    findings = []
    listed = {f.path: f for f in manifest.files}
    covered = {p: d for p, d in signed.items() if p != MANIFEST_NAME}
    for rel in sorted(set(covered) - set(listed)):
        findings.append(Finding("manifest", rel, "signed file is not listed in the OTA manifest"))
    for rel in sorted(set(listed) - set(covered)):
        findings.append(Finding("manifest", rel, "listed in the OTA manifest but not signed"))
    for rel in sorted(set(listed) & set(covered)):
        if listed[rel].sha256 != covered[rel]:
            findings.append(Finding("manifest", rel, "the manifest's sha256 differs from the signed one"))
    if last_sequence is not None and manifest.sequence <= last_sequence:
        findings.append(Finding("rollback", MANIFEST_NAME, f"sequence {manifest.sequence} is not above the last installed "
                                                           f"{last_sequence}: refusing a rollback or a replay"))
    if manifest.expires_at() <= now:
        findings.append(Finding("expired", MANIFEST_NAME, f"the manifest expired at {manifest.expires} (now {iso(now)})"))
    return findings


def _runtime_version(package: str | None, overrides: dict[str, str]) -> str | None:
    if package is None:
        return None
    if package in overrides:
        return overrides[package]
    try:
        return package_version(package)
    except PackageNotFoundError:
        return None


def _runtime_of(fmt: str) -> str | None:
    if fmt == "file":
        return None
    from mdeploy.passes.backends import backend

    return backend(fmt).package


def parse_runtime_versions(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        runtime, _, ver = v.partition("=")
        if not runtime.strip() or not ver.strip():
            raise BadInput(f"--min-runtime-version {v!r} is not RUNTIME=VERSION",
                           "e.g. --min-runtime-version ai-edge-litert=1.2.0 (runtimes: ai-edge-litert, onnxruntime, tensorflow)")
        out[runtime.strip()] = ver.strip()
    return out


def release(path: Path, out_dir: Path, *, model_id: str, version: str, sequence: int, key: Path,
            cert: Path | None = None, chain: tuple[Path, ...] = (), hardware_class: str = "any",
            rollout: list[str] | None = None, expires: str | None = None, expires_in: str = "90d",
            min_runtime_versions: tuple[str, ...] = (), force: bool = False) -> dict[str, Any]:
    """Write OUTDIR: files/<the artifact or the directory's files>, ota-manifest.json and mdeploy.sig over both."""
    path = _existing(path)
    safe_component(model_id, "--model-id")
    check_version(version)
    if sequence < 0:
        raise BadInput(f"--sequence {sequence} is negative", "sequence numbers start at 0 and grow with every release")
    stages = parse_rollout(rollout)
    overrides = parse_runtime_versions(min_runtime_versions)
    now = datetime.now(UTC).replace(microsecond=0)
    expiry = parse_time(expires, "--expires") if expires else now + parse_duration(expires_in)
    if expiry <= now:
        raise BadInput(f"--expires {iso(expiry)} is in the past", "give a time in the future (or --expires-in 30d)")
    out_dir = Path(out_dir)
    if out_dir.resolve() == path.resolve() or path.resolve() in out_dir.resolve().parents:
        raise BadInput(f"-o {out_dir} is inside {path}", "write the release next to the artifacts, not into them")
    ensure_writable(out_dir, force)
    with atomic_output(out_dir, force=force) as tmp:
        files = tmp / FILES_DIR
        with storage_errors():
            if path.is_dir():
                # a signed bundle's old signature is not part of the new release
                shutil.copytree(path, files, ignore=shutil.ignore_patterns(SIGNATURE_NAME))
            else:
                files.mkdir(parents=True)
                shutil.copy2(path, files / path.name)
        sm_dirs = savedmodel_dirs(files)
        entries = []
        for p in sorted(p for p in files.rglob("*") if p.is_file()):
            rel_in_files = p.relative_to(files).as_posix()
            fmt = file_format(rel_in_files, sm_dirs)
            runtime = _runtime_of(fmt)
            entries.append(FileEntry(f"{FILES_DIR}/{rel_in_files}", file_sha256(p), p.stat().st_size, fmt, runtime,
                                     _runtime_version(runtime, overrides)))
        if not entries:
            raise BadInput(f"{path}: no files to release", "pass an artifact file or a directory with files in it")
        manifest = OtaManifest(model_id=model_id, version=version, sequence=sequence, created=iso(now), expires=iso(expiry),
                               hardware_class=hardware_class, rollout=stages, files=tuple(entries),
                               signing={"library": f"model-signing {package_version('model-signing')}",
                                        "signature": SIGNATURE_NAME, "hash": "sha256",
                                        "covers": f"every file in this directory except {SIGNATURE_NAME}",
                                        "method": "certificate" if cert else "key"})
        with storage_errors():
            (tmp / MANIFEST_NAME).write_text(manifest.to_json())
        sign_path(tmp, tmp / SIGNATURE_NAME, key=key, cert=cert, chain=chain)
    return {"release": str(out_dir), "manifest": str(out_dir / MANIFEST_NAME), "signature": str(out_dir / SIGNATURE_NAME),
            **manifest.to_dict()}


def keygen(out_dir: Path, *, force: bool = False) -> dict[str, str]:
    """An EC P-256 key pair for signing: private.pem (mode 0600) and public.pem."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    priv_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    pub_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    out_dir = Path(out_dir)
    priv_path, pub_path = out_dir / "private.pem", out_dir / "public.pem"
    ensure_writable(priv_path, force)
    ensure_writable(pub_path, force)
    with atomic_output(priv_path, force=force) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(priv_pem)
    with atomic_output(pub_path, force=force) as tmp:
        tmp.write_bytes(pub_pem)
    return {"private_key": str(priv_path), "public_key": str(pub_path), "curve": "P-256"}
