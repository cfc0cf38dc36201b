"""SSH key pairs as Flux makes and reads them, for the source Secret.

* :func:`generate_rsa`: fluxcd/pkg ``ssh/key_pair.go`` ``RSAGenerator`` (``flux bootstrap git
  --ssh-key-algorithm=rsa --ssh-rsa-bits=<bits>``): the private key as PKCS#8 PEM (``-----BEGIN
  PRIVATE KEY-----``, unencrypted), the public key as ``ssh.MarshalAuthorizedKey``
  (``ssh-rsa <base64>\\n``, no comment).
* :func:`load`: fluxcd/flux2 ``sourcesecret.LoadKeyPair`` (``--private-key-file`` with
  ``--password``): the private key bytes kept verbatim as ``identity``, the public key derived.
  PEM (PKCS#1, PKCS#8, encrypted or not) and OpenSSH (``-----BEGIN OPENSSH PRIVATE KEY-----``)
  keys are read with ``cryptography``.

Private keys never appear in a ``repr``, a log line or an exception message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InvalidInput

#: Bits of a generated RSA key (the issue's ``--ssh-rsa-bits=4096``; Flux's default is 2048).
DEFAULT_RSA_BITS = 4096


@dataclass(frozen=True)
class KeyPair:
    """``private_key`` (the ``identity`` text), ``public_key`` (``identity.pub``,
    ``"<type> <base64>\\n"``), ``key_type`` (``ssh-rsa``, ``ssh-ed25519``, ``ecdsa-sha2-nistp256``...),
    ``bits`` (the key size) and ``key`` (the ``cryptography`` private key object)."""

    private_key: str = field(repr=False)
    public_key: str
    key_type: str
    bits: int
    key: object = field(repr=False, compare=False)

    @property
    def is_rsa(self) -> bool:
        return self.key_type == "ssh-rsa"


def _public(key) -> tuple[str, str, int]:
    from cryptography.hazmat.primitives import serialization

    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode("ascii")
    return line + "\n", line.split(" ", 1)[0], getattr(key, "key_size", 0) or 0


def generate_rsa(bits: int = DEFAULT_RSA_BITS) -> KeyPair:
    """A new RSA key pair of ``bits`` (e = 65537), as Flux generates one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public, key_type, size = _public(key)
    return KeyPair(pem.decode("ascii"), public, key_type, size, key)


def load(private_key: str, passphrase: str | None = None, *, field: str = "privateKeySecret",
         passphrase_from: str = "passwordSecret") -> KeyPair:
    """The key pair of ``private_key`` (PEM or OpenSSH text), decrypted with ``passphrase`` when it
    is encrypted. Raises InvalidInput(``field``) for text that is not a private key, a missing or
    wrong passphrase (``passphrase_from`` says where it comes from), or a key type SSH cannot use;
    the message never holds the key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if not isinstance(private_key, str) or "PRIVATE KEY-----" not in private_key:
        raise InvalidInput(field, "is not a private key in PEM or OpenSSH format (-----BEGIN ... PRIVATE KEY-----)")
    data = private_key.encode("utf-8")
    password = passphrase.encode("utf-8") if passphrase else None
    try:
        if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
            key = serialization.load_ssh_private_key(data, password)
        else:
            key = serialization.load_pem_private_key(data, password)
    except TypeError:  # encrypted without a password, or a password for a plain key
        if password is None:
            raise InvalidInput(field, f"the private key is encrypted; give its passphrase ({passphrase_from})") from None
        raise InvalidInput(field, f"the private key is not encrypted, but a passphrase was given ({passphrase_from})") from None
    except ValueError:
        if password is not None:
            raise InvalidInput(field, f"the private key could not be decrypted: wrong passphrase ({passphrase_from}), or not a key") from None
        raise InvalidInput(field, "is not a readable private key") from None
    except Exception as exc:  # unsupported algorithm and the like, never the key's bytes
        raise InvalidInput(field, f"is not a usable private key ({type(exc).__name__})") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        raise InvalidInput(field, f"holds a {type(key).__name__}, not an SSH key (RSA, ECDSA or Ed25519)")
    public, key_type, size = _public(key)
    return KeyPair(private_key, public, key_type, size, key)
