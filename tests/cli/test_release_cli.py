"""`mdeploy sign` / `verify` / `release` / `keygen`: a release verifies untouched, and every tampering, rollback,
expiry and wrong key fails with exit 1 naming the cause and the file."""
from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from mdeploy.passes.release.signing import file_sha256


def _write_key(key, path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _pair(where: Path, name: str) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    where.mkdir(parents=True, exist_ok=True)
    pub = where / f"{name}.pub.pem"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return _write_key(key, where / f"{name}.pem"), pub


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("keys")
    priv, pub = _pair(where, "signer")
    other_priv, other_pub = _pair(where, "other")
    return {"private": priv, "public": pub, "other_public": other_pub}


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A directory shaped like a deployment bundle: a model file, a nested SavedModel-like tree and a config."""
    root = tmp_path / "bundle"
    (root / "models" / "digits" / "1" / "variables").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[2] / "sample_models" / "digits.keras", root / "digits.keras")
    (root / "models" / "digits" / "1" / "saved_model.pb").write_bytes(b"\x08\x01" * 500)
    (root / "models" / "digits" / "1" / "variables" / "variables.index").write_bytes(b"index" * 10)
    (root / "models.config").write_text('model_config_list { config { name: "digits" } }\n')
    return root


def _release(mdeploy, path, out, keys, *extra):
    r = mdeploy("release", path, "-o", out, "--model-id", "digits", "--version", "1.4.0", "--sequence", 7,
                "--key", keys["private"], "--hardware-class", "cortex-a53", "--rollout", "canary:5", "--rollout", "all:100",
                *extra)
    assert r.exit_code == 0, r.stderr
    return out


def _verify(mdeploy, path, keys, *extra):
    r = mdeploy("verify", path, "--key", keys["public"], "--json", *extra)
    return r, json.loads(r.stdout)


def test_release_writes_a_manifest_of_every_file_and_verifies_untouched(mdeploy, tmp_path, bundle, keys):
    rel = _release(mdeploy, bundle, tmp_path / "rel", keys, "--expires-in", "30d")
    manifest = json.loads((rel / "ota-manifest.json").read_text())
    assert (manifest["model_id"], manifest["version"], manifest["sequence"]) == ("digits", "1.4.0", 7)
    assert manifest["hardware_class"] == "cortex-a53"
    assert [s["name"] for s in manifest["rollout"]] == ["canary", "all"]
    expires = dt.datetime.fromisoformat(manifest["expires"].replace("Z", "+00:00"))
    assert dt.timedelta(days=29) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=30)
    on_disk = sorted(p.relative_to(rel).as_posix() for p in (rel / "files").rglob("*") if p.is_file())
    entries = {f["path"]: f for f in manifest["files"]}
    assert sorted(entries) == on_disk and len(on_disk) == 4
    for rel_path, f in entries.items():
        assert f["sha256"] == file_sha256(rel / rel_path) and f["size"] == (rel / rel_path).stat().st_size
    assert entries["files/digits.keras"]["format"] == "keras" and entries["files/digits.keras"]["runtime"] == "tensorflow"
    assert entries["files/digits.keras"]["min_runtime_version"]
    assert entries["files/models/digits/1/saved_model.pb"]["format"] == "savedmodel"
    assert entries["files/models.config"]["format"] == "file" and entries["files/models.config"]["runtime"] is None

    r, verdict = _verify(mdeploy, rel, keys, "--last-sequence", 6)
    assert r.exit_code == 0, r.stderr
    assert verdict["ok"] and verdict["findings"] == [] and verdict["manifest"]["sequence"] == 7
    assert verdict["files"] == 5  # the four files and the manifest; only mdeploy.sig is outside the signature


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("tamper, cause, named", [
    (lambda rel: _flip_byte(rel / "files" / "digits.keras"), "modified", "files/digits.keras"),
    (lambda rel: (rel / "files" / "models" / "digits" / "1" / "extra.so").write_bytes(b"\x7fELF"), "added",
     "files/models/digits/1/extra.so"),
    (lambda rel: (rel / "files" / "models.config").unlink(), "removed", "files/models.config"),
    (lambda rel: (rel / "ota-manifest.json").write_text(
        (rel / "ota-manifest.json").read_text().replace('"sequence": 7', '"sequence": 70')), "modified", "ota-manifest.json"),
])
def test_verify_names_the_file_that_differs(mdeploy, tmp_path, bundle, keys, tamper, cause, named):
    rel = _release(mdeploy, bundle, tmp_path / "rel", keys)
    tamper(rel)
    r, verdict = _verify(mdeploy, rel, keys)
    assert r.exit_code == 1
    assert not verdict["ok"]
    assert [(f["cause"], f["file"]) for f in verdict["findings"]] == [(cause, named)]
    assert f"{cause}: {named}" in r.stderr  # the error line names the cause and the file


def test_verify_refuses_a_rollback_and_an_expired_release(mdeploy, tmp_path, bundle, keys):
    rel = _release(mdeploy, bundle, tmp_path / "rel", keys, "--expires", "2099-01-01T00:00:00Z")
    for last in (7, 8):  # equal: a replay; higher: a rollback
        r, verdict = _verify(mdeploy, rel, keys, "--last-sequence", last)
        assert r.exit_code == 1 and [f["cause"] for f in verdict["findings"]] == ["rollback"]
    r, _ = _verify(mdeploy, rel, keys, "--last-sequence", 6)
    assert r.exit_code == 0
    r, verdict = _verify(mdeploy, rel, keys, "--at", "2099-01-01T00:00:01Z")
    assert r.exit_code == 1 and [f["cause"] for f in verdict["findings"]] == ["expired"]
    assert "expired" in r.stderr
    r, _ = _verify(mdeploy, rel, keys, "--at", "2098-12-31T23:59:59Z")
    assert r.exit_code == 0


def test_verify_fails_with_another_key_and_without_a_signature(mdeploy, tmp_path, bundle, keys):
    rel = _release(mdeploy, bundle, tmp_path / "rel", keys)
    r = mdeploy("verify", rel, "--key", keys["other_public"], "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["findings"][0]["cause"] == "wrong-key"
    (rel / "mdeploy.sig").unlink()
    r, verdict = _verify(mdeploy, rel, keys)
    assert r.exit_code == 1 and verdict["findings"][0]["cause"] == "unsigned"


def test_sign_a_single_artifact_and_a_directory_with_an_ignore_list(mdeploy, tmp_path, bundle, keys):
    artifact = bundle / "digits.keras"
    r = mdeploy("sign", artifact, "--key", keys["private"], "--signature", tmp_path / "digits.sig")
    assert r.exit_code == 0, r.stderr
    r = mdeploy("verify", artifact, "--key", keys["public"], "--signature", tmp_path / "digits.sig")
    assert r.exit_code == 0, r.stderr
    _flip_byte(artifact)
    r = mdeploy("verify", artifact, "--key", keys["public"], "--signature", tmp_path / "digits.sig")
    assert r.exit_code == 1 and "modified" in r.stderr and "digits.keras" in r.stderr

    (bundle / "logs").mkdir()
    r = mdeploy("sign", bundle, "--key", keys["private"], "--ignore", "logs", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["ignored"] == ["logs"]
    (bundle / "logs" / "today.txt").write_text("runtime log")  # inside the signed ignore list: allowed
    r, _ = _verify(mdeploy, bundle, keys)
    assert r.exit_code == 0, r.stderr
    (bundle / ".gitignore").write_text("*")  # no silent exclusions, not even git's files
    r, verdict = _verify(mdeploy, bundle, keys)
    assert r.exit_code == 1 and verdict["findings"][0] == {"cause": "added", "file": ".gitignore",
                                                           "detail": "file is not covered by the signature"}
    r = mdeploy("sign", bundle, "--key", keys["private"])
    assert r.exit_code == 2 and "already exists" in r.stderr  # never overwrites a signature without --force


def test_certificate_signing_verifies_against_the_chain(mdeploy, tmp_path, bundle):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
                 encipher_only=False, decipher_only=False)

    def ca(name: str):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage), critical=True)
                .sign(key, hashes.SHA256()))
        path = tmp_path / f"{name}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key, subject, path

    ca_key, ca_name, ca_pem = ca("release-ca")
    _, _, stranger_pem = ca("stranger-ca")
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(2)
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    leaf_pem = tmp_path / "leaf.pem"
    leaf_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    leaf_key_pem = _write_key(leaf_key, tmp_path / "leaf.key")

    r = mdeploy("sign", bundle, "--key", leaf_key_pem, "--cert", leaf_pem, "--cert-chain", ca_pem)
    assert r.exit_code == 0, r.stderr
    assert mdeploy("verify", bundle, "--cert-chain", ca_pem).exit_code == 0
    r = mdeploy("verify", bundle, "--cert-chain", stranger_pem)
    assert r.exit_code == 1 and "bad-signature" in r.stderr


def test_bad_inputs_exit_2(mdeploy, tmp_path, bundle, keys):
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key = _write_key(rsa.generate_private_key(public_exponent=65537, key_size=2048), tmp_path / "rsa.pem")
    r = mdeploy("sign", bundle, "--key", rsa_key)
    assert r.exit_code == 2 and "elliptic-curve" in r.stderr
    r = mdeploy("release", bundle, "-o", tmp_path / "rel", "--model-id", "digits", "--version", "1.4", "--sequence", 1,
                "--key", keys["private"])
    assert r.exit_code == 2 and "semantic version" in r.stderr
    r = mdeploy("release", bundle, "-o", tmp_path / "rel", "--model-id", "digits", "--version", "1.4.0", "--sequence", 1,
                "--key", keys["private"], "--expires", "2020-01-01T00:00:00Z")
    assert r.exit_code == 2 and "in the past" in r.stderr
    assert not (tmp_path / "rel").exists()
    r = mdeploy("verify", tmp_path / "missing", "--key", keys["public"])
    assert r.exit_code == 2


def test_keygen_pair_signs_and_verifies(mdeploy, tmp_path, bundle):
    r = mdeploy("keygen", "-o", tmp_path / "k")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "k" / "private.pem").stat().st_mode & 0o077 == 0
    assert mdeploy("sign", bundle, "--key", tmp_path / "k" / "private.pem").exit_code == 0
    assert mdeploy("verify", bundle, "--key", tmp_path / "k" / "public.pem").exit_code == 0
