"""The SGX extensions of an Intel PCK certificate (OID 1.2.840.113741.1.13.1).

After Intel's "SGX PCK Certificate and CRL Profile": a SEQUENCE of
(OID, value) pairs: PPID (.1, 16 bytes), TCB (.2: sixteen CPUSVN component
SVNs .2.1-.2.16, PCESVN .2.17, CPUSVN .2.18), PCE-ID (.3, 2 bytes), FMSPC
(.4, 6 bytes), SGX type (.5, enumerated) and, for platform CA certificates,
the platform instance ID (.6) and configuration (.7). Parsed with a small
strict DER reader (definite, minimal lengths; no trailing bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from prism_backends.attestation.common import ChainInvalid

SGX_EXTENSIONS_OID = "1.2.840.113741.1.13.1"
_PPID = SGX_EXTENSIONS_OID + ".1"
_TCB = SGX_EXTENSIONS_OID + ".2"
_PCE_SVN = _TCB + ".17"
_CPU_SVN = _TCB + ".18"
_PCE_ID = SGX_EXTENSIONS_OID + ".3"
_FMSPC = SGX_EXTENSIONS_OID + ".4"
_SGX_TYPE = SGX_EXTENSIONS_OID + ".5"
_PLATFORM_INSTANCE_ID = SGX_EXTENSIONS_OID + ".6"

_SEQUENCE = 0x30
_OID = 0x06
_OCTET_STRING = 0x04
_INTEGER = 0x02
_ENUMERATED = 0x0A


@dataclass(frozen=True)
class PckExtensions:
    """What a PCK certificate says about its platform's TCB and identity."""

    ppid: bytes  # 16
    cpu_svn: bytes  # 16, the raw CPUSVN
    tcb_components: tuple[int, ...]  # 16 SGX TCB component SVNs
    pce_svn: int
    pce_id: bytes  # 2
    fmspc: bytes  # 6
    sgx_type: int  # 0 standard, 1 scalable, 2 scalable with integrity
    platform_instance_id: bytes | None = None


class _DerError(ValueError):
    pass


def pck_extensions(certificate: x509.Certificate) -> PckExtensions:
    """Parse the SGX extensions of a PCK certificate; :class:`ChainInvalid` if it
    has none or they are malformed (it is then no PCK certificate)."""
    try:
        extension = certificate.extensions.get_extension_for_oid(
            x509.ObjectIdentifier(SGX_EXTENSIONS_OID)
        )
    except x509.ExtensionNotFound as exc:
        raise ChainInvalid("the PCK certificate has no SGX extensions") from exc
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise ChainInvalid(f"the PCK certificate's extensions are malformed: {exc}") from exc
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - defensive
        raise ChainInvalid("the PCK certificate's SGX extensions are not raw DER")
    try:
        return _parse(value.value)
    except _DerError as exc:
        raise ChainInvalid(f"the PCK certificate's SGX extensions are malformed: {exc}") from exc


def _parse(der: bytes) -> PckExtensions:
    fields = _pairs(_only(der, _SEQUENCE, "SGX extensions"), "SGX extensions")
    for required in (_PPID, _TCB, _PCE_ID, _FMSPC, _SGX_TYPE):
        if required not in fields:
            raise _DerError(f"missing {required}")
    tcb = _pairs(_expect(fields[_TCB], _SEQUENCE, "TCB"), "TCB")
    components = []
    for index in range(1, 17):
        oid = f"{_TCB}.{index}"
        if oid not in tcb:
            raise _DerError(f"TCB lacks component {index}")
        components.append(_integer(tcb[oid], f"TCB component {index}", 0xFF))
    if _PCE_SVN not in tcb or _CPU_SVN not in tcb:
        raise _DerError("TCB lacks PCESVN or CPUSVN")
    platform_instance = fields.get(_PLATFORM_INSTANCE_ID)
    return PckExtensions(
        ppid=_octets(fields[_PPID], "PPID", 16),
        cpu_svn=_octets(tcb[_CPU_SVN], "CPUSVN", 16),
        tcb_components=tuple(components),
        pce_svn=_integer(tcb[_PCE_SVN], "PCESVN", 0xFFFF),
        pce_id=_octets(fields[_PCE_ID], "PCE-ID", 2),
        fmspc=_octets(fields[_FMSPC], "FMSPC", 6),
        sgx_type=_integer(fields[_SGX_TYPE], "SGX type", 0xFF, tag=_ENUMERATED),
        platform_instance_id=(
            _octets(platform_instance, "platform instance ID", 16)
            if platform_instance is not None and platform_instance[0] == _OCTET_STRING
            else None
        ),
    )


def _pairs(content: bytes, what: str) -> dict[str, tuple[int, bytes]]:
    """A SEQUENCE OF SEQUENCE { OID, value } as {oid: (tag, value)}; duplicates refused."""
    result: dict[str, tuple[int, bytes]] = {}
    for tag, pair in _elements(content):
        if tag != _SEQUENCE:
            raise _DerError(f"{what}: an entry is not a SEQUENCE")
        items = list(_elements(pair))
        if len(items) != 2 or items[0][0] != _OID:
            raise _DerError(f"{what}: an entry is not (OID, value)")
        oid = _oid(items[0][1])
        if oid in result:
            raise _DerError(f"{what}: {oid} appears twice")
        result[oid] = items[1]
    return result


def _elements(data: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        tag, value, offset = _tlv(data, offset)
        out.append((tag, value))
    return out


def _tlv(data: bytes, offset: int) -> tuple[int, bytes, int]:
    if len(data) - offset < 2:
        raise _DerError("truncated element")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise _DerError("multi-byte tags are not expected")
    first = data[offset + 1]
    offset += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(data) - offset < count:
            raise _DerError("bad length")
        length = int.from_bytes(data[offset : offset + count], "big")
        if length < 0x80 or data[offset] == 0:
            raise _DerError("length is not minimally encoded")
        offset += count
    if len(data) - offset < length:
        raise _DerError("element overruns its container")
    return tag, data[offset : offset + length], offset + length


def _only(data: bytes, tag: int, what: str) -> bytes:
    got, value, end = _tlv(data, 0)
    if got != tag or end != len(data):
        raise _DerError(f"{what} is not a single element of tag {tag:#x}")
    return value


def _expect(element: tuple[int, bytes], tag: int, what: str) -> bytes:
    if element[0] != tag:
        raise _DerError(f"{what} has tag {element[0]:#x}, expected {tag:#x}")
    return element[1]


def _octets(element: tuple[int, bytes], what: str, size: int) -> bytes:
    value = _expect(element, _OCTET_STRING, what)
    if len(value) != size:
        raise _DerError(f"{what} is {len(value)} bytes, expected {size}")
    return value


def _integer(element: tuple[int, bytes], what: str, maximum: int, *, tag: int = _INTEGER) -> int:
    value = _expect(element, tag, what)
    if not value or (len(value) > 1 and value[0] == 0 and value[1] < 0x80):
        raise _DerError(f"{what} is not a minimal integer")
    number = int.from_bytes(value, "big", signed=True)
    if not 0 <= number <= maximum:
        raise _DerError(f"{what} is {number}, outside 0..{maximum}")
    return number


def _oid(value: bytes) -> str:
    if not value or value[-1] & 0x80:
        raise _DerError("bad OID")
    arcs: list[int] = []
    current = 0
    for index, byte in enumerate(value):
        if current == 0 and byte == 0x80 and (index == 0 or not value[index - 1] & 0x80):
            raise _DerError("OID arc is not minimally encoded")
        current = (current << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(current)
            current = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in head + arcs[1:])
