"""`mdeploy sign`, `verify`, `release` and `keygen`: signed over-the-air releases for edge devices.

The pure functions live in passes/workflows/release.py; these wrappers parse flags and render.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mdeploy.cli._common import ForceOpt, JsonOpt, emit_json, stdout
from mdeploy.passes.core.errors import CheckFailed

PathArg = Annotated[Path, typer.Argument(help="An artifact file, or a directory (a bundle, a release).", show_default=False)]
PrivateKeyOpt = Annotated[Path, typer.Option("--key", help="PEM elliptic-curve private key (encrypted: set MDEPLOY_KEY_PASSWORD).", show_default=False)]
CertOpt = Annotated[Path | None, typer.Option("--cert", help="Sign with this signing certificate (its key is --key) instead of a bare key.")]
ChainOpt = Annotated[list[Path] | None, typer.Option("--cert-chain", help="A certificate of the chain (repeatable): with --cert when signing; the root of trust when verifying.")]


def sign_cli(
    path: PathArg,
    key: PrivateKeyOpt,
    cert: CertOpt = None,
    cert_chain: ChainOpt = None,
    ignore: Annotated[list[str] | None, typer.Option("--ignore", help="A path inside the directory to leave unsigned (repeatable); recorded in the signature.")] = None,
    signature: Annotated[Path | None, typer.Option("--signature", help="Where to write the signature. [default: DIR/mdeploy.sig, or FILE.sig]")] = None,
    json_out: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Sign an artifact or a directory (every file in it) with model-signing, offline."""
    from mdeploy.passes.workflows.release import sign

    result = sign(path, key=key, cert=cert, chain=tuple(cert_chain or ()), ignore=tuple(ignore or ()), signature=signature,
                  force=force)
    if json_out:
        emit_json(result)
        return
    ignored = f" (left unsigned: {', '.join(result['ignored'])})" if result["ignored"] else ""
    stdout.print(f"signed {result['files']} file(s) under {result['path']}{ignored}\nsignature: {result['signature']}",
                 highlight=False)


def verify_cli(
    path: PathArg,
    key: Annotated[Path | None, typer.Option("--key", help="PEM public key matching the signing key.")] = None,
    cert_chain: ChainOpt = None,
    last_sequence: Annotated[int | None, typer.Option("--last-sequence", help="The sequence the device last installed: refuse a release not above it (rollback).")] = None,
    at: Annotated[str | None, typer.Option("--at", help="Check expiry as of this ISO 8601 time instead of now.")] = None,
    signature: Annotated[Path | None, typer.Option("--signature", help="The signature to check. [default: DIR/mdeploy.sig, or FILE.sig]")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify a signed artifact or release: every file, the manifest's sequence and expiry. Exit 1 names the cause."""
    from mdeploy.passes.workflows.release import verify

    verdict = verify(path, key=key, chain=tuple(cert_chain or ()), last_sequence=last_sequence, at=at, signature=signature)
    if json_out:
        emit_json(verdict.to_dict())
    elif verdict.ok:
        m = verdict.manifest
        what = f"{m['model_id']} {m['version']} (sequence {m['sequence']}, expires {m['expires']})" if m else verdict.path
        stdout.print(f"verified: {what}, {verdict.files} signed file(s)", highlight=False)
    else:
        for f in verdict.findings:
            stdout.print(f"{f.cause}: {f.file or '-'}: {f.detail}", highlight=False)
    if not verdict.ok:
        first = verdict.findings[0]
        more = f" (and {len(verdict.findings) - 1} more)" if len(verdict.findings) > 1 else ""
        raise CheckFailed(f"verification failed: {first.cause}: {first.file or verdict.path}: {first.detail}{more}",
                          _HINTS.get(first.cause, "do not install this release"))


_HINTS = {
    "modified": "a file changed after signing: do not install; re-download the release or re-sign it",
    "added": "a file was added after signing: remove it, or re-sign (use sign --ignore for files that may vary)",
    "removed": "a signed file is missing: the download is incomplete; fetch the release again",
    "wrong-key": "check that --key is the public half of the key that signed this release",
    "bad-signature": "the signature file is damaged or not a model-signing bundle: fetch it again",
    "unsigned": "sign it first with `mdeploy sign` (or `mdeploy release`)",
    "rollback": "a device only installs a release with a higher --sequence than the one it has",
    "expired": "publish a new release with a later --expires",
    "manifest": "re-create the release with `mdeploy release`",
}


def release_cli(
    path: PathArg,
    key: PrivateKeyOpt,
    model_id: Annotated[str, typer.Option("--model-id", help="The model's stable id on the device.", show_default=False)],
    version: Annotated[str, typer.Option("--version", help="Semantic version of this release, e.g. 1.4.0.", show_default=False)],
    sequence: Annotated[int, typer.Option("--sequence", help="Monotonic release number: devices refuse one not above what they have.", show_default=False)],
    out_dir: Annotated[Path, typer.Option("--output", "-o", help="The release directory to write.", show_default=False)],
    cert: CertOpt = None,
    cert_chain: ChainOpt = None,
    hardware_class: Annotated[str, typer.Option("--hardware-class", help="Which devices may install it, e.g. cortex-a53 or esp32-s3.")] = "any",
    rollout: Annotated[list[str] | None, typer.Option("--rollout", help="A stage NAME:PERCENT of the fleet (repeatable, rising), e.g. canary:5. [default: all:100]")] = None,
    expires: Annotated[str | None, typer.Option("--expires", help="Expiry as an ISO 8601 time.")] = None,
    expires_in: Annotated[str, typer.Option("--expires-in", help="Expiry from now: 12h, 30d, 8w (when --expires is not given).")] = "90d",
    min_runtime_version: Annotated[list[str] | None, typer.Option("--min-runtime-version", help="RUNTIME=VERSION (repeatable). [default: the version installed here, that mdeploy verified with]")] = None,
    json_out: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Write a signed OTA release: the files, an OTA manifest (id, version, sequence, digests, expiry) and mdeploy.sig."""
    from mdeploy.passes.workflows.release import release

    result = release(path, out_dir, model_id=model_id, version=version, sequence=sequence, key=key, cert=cert,
                     chain=tuple(cert_chain or ()), hardware_class=hardware_class, rollout=rollout, expires=expires,
                     expires_in=expires_in, min_runtime_versions=tuple(min_runtime_version or ()), force=force)
    if json_out:
        emit_json(result)
        return
    stdout.print(f"release {result['model_id']} {result['version']} (sequence {result['sequence']}, {len(result['files'])} "
                 f"file(s), expires {result['expires']})\nwritten to {result['release']} (manifest and signature inside)",
                 highlight=False)


def keygen_cli(
    out_dir: Annotated[Path, typer.Option("--output", "-o", help="Directory for private.pem and public.pem.", show_default=False)],
    json_out: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Make an EC P-256 key pair for sign/release (for tests and trials; keep production keys in your KMS/HSM)."""
    from mdeploy.passes.workflows.release import keygen

    result = keygen(out_dir, force=force)
    if json_out:
        emit_json(result)
        return
    stdout.print(f"private key: {result['private_key']} (keep it secret)\npublic key:  {result['public_key']}", highlight=False)
