"""XML signatures on CAP documents (enveloped XML-DSig, CAP 1.2 section 3.3.2.1).

Verified with signxml (a maintained XML-DSig implementation on lxml and cryptography) against
the certificates the province trusts, never against a certificate the document carries. What
is read afterwards is the element signxml says was signed, so a signature over one alert
cannot vouch for another wrapped around it ("signature wrapping").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lxml import etree
from signxml import XMLVerifier
from signxml.exceptions import InvalidInput, InvalidSignature

from alerts.cap import CAP_NS, DSIG_NS, refuse

PEM_BEGIN = "-----BEGIN CERTIFICATE-----"


def load_certificates(paths: list[str] | tuple[str, ...]) -> list[str]:
    """PEM certificates from files or directories (``*.pem``, ``*.crt``); a bundle file may
    hold several."""
    out: list[str] = []
    for raw in paths:
        p = Path(raw)
        files = sorted([*p.glob("*.pem"), *p.glob("*.crt")]) if p.is_dir() else [p]
        for f in files:
            text = f.read_text(encoding="ascii", errors="replace")
            for chunk in text.split(PEM_BEGIN)[1:]:
                out.append(
                    PEM_BEGIN
                    + chunk.split("-----END CERTIFICATE-----")[0]
                    + "-----END CERTIFICATE-----\n"
                )
    return out


@dataclass(frozen=True)
class Verified:
    root: etree._Element  # the signed alert element
    certificate_index: int


def has_signature(root: etree._Element) -> bool:
    return root.find(f"{{{DSIG_NS}}}Signature") is not None


def verify(root: etree._Element, certificates: list[str]) -> Verified:
    """The signed alert, or a refusal saying why the signature does not hold."""
    if not certificates:
        raise refuse(
            "untrusted_signature",
            "Tài liệu có chữ ký số nhưng tỉnh chưa cấu hình chứng thư tin cậy nào để kiểm tra.",
            "The document is signed but no trusted certificate is configured.",
        )
    last = ""
    for index, cert in enumerate(certificates):
        try:
            result = XMLVerifier().verify(etree.tostring(root), x509_cert=cert, expect_references=1)
        except (InvalidSignature, InvalidInput) as exc:
            last = str(exc)
            continue
        signed = result.signed_xml
        if (
            signed is None
            or etree.QName(signed).namespace != CAP_NS
            or etree.QName(signed).localname != "alert"
        ):
            raise refuse(
                "bad_signature",
                "Chữ ký số không phủ toàn bộ cảnh báo CAP.",
                "The signature does not cover the whole CAP alert.",
            )
        return Verified(signed, index)
    raise refuse(
        "bad_signature",
        f"Chữ ký số không hợp lệ hoặc không thuộc chứng thư tin cậy nào của tỉnh ({last[:200]}).",
        f"Invalid signature or not from a trusted certificate ({last[:200]}).",
    )
