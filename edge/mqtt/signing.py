"""Gallery commands are signed by the central server (Ed25519); a box holds only the central's public key(s).

    generate_keys(Path("central.key"), Path("central.pub"))           # `edge central keygen`, on the central
    signed = sign_command(command, load_private_key(Path("central.key")), "school-1/box-17", lifetime_s=30)
    verifier = CommandVerifier(load_public_keys(Path("central.pub")), "school-1/box-17")
    verifier.check(signed)                                           # CommandRefused naming the reason

A signed command carries `device` (`<site>/<device id>`: the only box that may apply it), `issued_at`, `expires_at`
(ISO-8601 UTC) and `signature`: base64 Ed25519 over canonical_bytes(command), the command without `signature` as
sorted, compact UTF-8 JSON. The box refuses a bad signature, another device, an expired command, one issued more
than CLOCK_SKEW_S in its future, and one whose lifetime is over MAX_LIFETIME_S. Replays within the lifetime are the
gallery's business (edge.gallery.sync records request ids until they expire).

Key rotation: a public key file may hold several PEM keys; a signature by any of them is accepted. Put the new key
beside the old one on every box, switch the central to the new private key, then remove the old public key.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.errors import EdgeError

MAX_LIFETIME_S = 24 * 3600.0
"""A command valid for longer than this is refused (a leaked command must not stay usable for long)."""
CLOCK_SKEW_S = 300.0
"""A command issued up to this far in the box's future is accepted (the clocks of central and box differ)."""
SIGNED_FIELDS = ("device", "issued_at", "expires_at", "signature")
PEM_END = b"-----END PUBLIC KEY-----"


class KeyFileError(EdgeError):
    """A key file is missing, unreadable, or not an Ed25519 key of the expected kind."""


class CommandRefused(EdgeError):
    """A gallery command failed the signature, device or time checks."""


def canonical_bytes(command: Dict[str, Any]) -> bytes:
    """What is signed: the command without `signature`, as sorted compact UTF-8 JSON."""
    body = {k: v for k, v in command.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def parse_time(text: Any, name: str) -> datetime:
    """An ISO-8601 time with an offset -> aware datetime, or CommandRefused."""
    try:
        moment = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise CommandRefused(f"{name} must be an ISO-8601 time with a UTC offset")
    return moment


# keys ---------------------------------------------------------------------------------------------------------------
def generate_keys(key_file: Path, public_file: Path) -> None:
    """A new Ed25519 key pair: the private key (PKCS#8 PEM, mode 0600) and its public key (PEM). Refuses to replace
    an existing file (a lost private key means installing a new public key on every box)."""
    for path in (key_file, public_file):
        if path.exists():
            raise KeyFileError(f"{path} exists; remove it first or choose another file")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(private)
        public_file.parent.mkdir(parents=True, exist_ok=True)
        public_file.write_bytes(public)
    except OSError as exc:
        raise KeyFileError(f"cannot write the key pair ({exc})") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot be read ({exc.strerror})") from None
    except (ValueError, TypeError):
        raise KeyFileError(
            f"{path}: not an unencrypted PEM private key (make one with `edge central keygen`)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 private key")
    return key


def load_public_keys(path: Path) -> List[Ed25519PublicKey]:
    """Every PEM public key in the file (several during a key rotation); at least one, all Ed25519."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot be read ({exc.strerror})") from None
    blocks = [block + PEM_END for block in raw.split(PEM_END) if block.strip()]
    keys = []
    for i, block in enumerate(blocks):
        try:
            key = serialization.load_pem_public_key(block.strip())
        except (ValueError, TypeError):
            raise KeyFileError(f"{path}: key {i + 1} is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{path}: key {i + 1} is not an Ed25519 public key")
        keys.append(key)
    if not keys:
        raise KeyFileError(f"{path}: no public key in the file")
    return keys


# signing and checking -----------------------------------------------------------------------------------------------
def sign_command(
    command: Dict[str, Any], key: Ed25519PrivateKey, device: str, lifetime_s: float, now: Optional[datetime] = None
) -> Dict[str, Any]:
    """A copy of `command` for one box (`<site>/<device id>`), valid for lifetime_s from now, signed."""
    if not 0 < lifetime_s <= MAX_LIFETIME_S:
        raise ValueError(f"a command's lifetime must be within 0..{MAX_LIFETIME_S:g} s, got {lifetime_s:g}")
    issued = now or datetime.now(timezone.utc)
    body = {k: v for k, v in command.items() if k not in SIGNED_FIELDS}
    body.update(
        device=device, issued_at=format_time(issued), expires_at=format_time(issued + timedelta(seconds=lifetime_s))
    )
    body["signature"] = base64.b64encode(key.sign(canonical_bytes(body))).decode("ascii")
    return body


@dataclass(frozen=True)
class CommandVerifier:
    """Checks a command's signature (any of `keys`), its device and its validity period against the box's clock."""

    keys: Sequence[Ed25519PublicKey]
    device: str
    """`<site>/<device id>` of this box."""

    def check(self, command: Dict[str, Any], now: Optional[datetime] = None) -> datetime:
        """Raise CommandRefused unless the command is signed, for this box and valid now; returns its expiry."""
        self._check_signature(command)
        if command.get("device") != self.device:
            raise CommandRefused(f"command is for device {command.get('device')!r}, this box is {self.device!r}")
        issued = parse_time(command.get("issued_at"), "issued_at")
        expires = parse_time(command.get("expires_at"), "expires_at")
        now = now or datetime.now(timezone.utc)
        if expires < now:
            raise CommandRefused(f"command expired at {format_time(expires)} (box clock {format_time(now)})")
        if issued > now + timedelta(seconds=CLOCK_SKEW_S):
            raise CommandRefused(f"command issued at {format_time(issued)}, in the box's future ({format_time(now)})")
        if (expires - issued).total_seconds() > MAX_LIFETIME_S or expires < issued:
            raise CommandRefused(f"command lifetime must be within 0..{MAX_LIFETIME_S:g} s")
        return expires

    def _check_signature(self, command: Dict[str, Any]) -> None:
        text = command.get("signature")
        if not isinstance(text, str):
            raise CommandRefused("command is not signed by the central")
        try:
            signature = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise CommandRefused("command signature is not base64") from None
        message = canonical_bytes(command)
        for key in self.keys:
            try:
                key.verify(signature, message)
                return
            except InvalidSignature:
                continue
        raise CommandRefused("command signature does not verify with the central key")


def box_verifier(key_file: Optional[str], site: str, device_id: str) -> Optional[CommandVerifier]:
    """The verifier of a box from its config (mqtt.central_key_file, device.site, device.id); None without a key."""
    if key_file is None:
        return None
    return CommandVerifier(tuple(load_public_keys(Path(key_file))), f"{site}/{device_id}")
