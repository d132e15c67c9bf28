"""Validators shared by the models and forms."""

from __future__ import annotations

import ipaddress
import re

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")

port_validators = [
    MinValueValidator(1, "A port is a number from 1 to 65535."),
    MaxValueValidator(65535, "A port is a number from 1 to 65535."),
]


def is_ip_literal(value: str) -> bool:
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return False
    return True


def validate_host(value: str) -> None:
    """A DNS host name (RFC 1123, IDNA allowed) or an IPv4/IPv6 literal."""
    if value != value.strip() or any(c.isspace() for c in value):
        raise ValidationError("A server address cannot contain spaces.", code="host_spaces")
    if is_ip_literal(value):
        return
    try:
        ascii_name = value.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValidationError(
            "Enter a valid host name or IP address, e.g. mail.example.org.", code="host"
        ) from None
    name = ascii_name[:-1] if ascii_name.endswith(".") else ascii_name
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValidationError(
            "Enter a valid host name or IP address, e.g. mail.example.org.", code="host"
        )


_HEADER_BAD = re.compile(r"[\r\n\x00]")


def validate_no_header_injection(value: str) -> None:
    """Header fields may not contain CR, LF or NUL (header injection)."""
    if value and _HEADER_BAD.search(value):
        raise ValidationError(
            "Line breaks and NUL characters are not allowed here.", code="header_injection"
        )


def parse_address_list(value: str) -> list[tuple[str, str]]:
    """``"Name <a@b>, c@d"`` -> [(name, address), ...]; raises ValidationError.

    Display names may be non-ASCII; addresses are checked one by one so the
    error names the bad one.
    """
    from email.utils import getaddresses

    from django.core.validators import validate_email

    validate_no_header_injection(value)
    result = []
    for name, address in getaddresses([value]):
        if not address and not name:
            continue
        try:
            validate_email(address)
        except ValidationError:
            shown = address or name
            raise ValidationError(
                f"“{shown}” is not a valid e-mail address.", code="address"
            ) from None
        result.append((name, address))
    return result


def validate_address_list(value: str) -> None:
    if value.strip():
        parse_address_list(value)
