"""The CAP 1.2 reader: the specification's example shapes are read completely; hostile or
wrong documents are refused with a reason before anything is understood from them; signatures
are checked against the province's certificates; random input never crashes it."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts import cap
from alerts.errors import CapRefused
from alerts.signature import has_signature, load_certificates, verify
from tests.alerts import capdocs as d


def refusal(raw: bytes, **kw) -> CapRefused:
    with pytest.raises(CapRefused) as err:
        cap.load(raw, **kw)
    return err.value


def test_homeland_security_example():
    _, a = cap.load(d.homeland_security(sent="2003-04-02T14:39:01-05:00"))
    assert (a.identifier, a.sender, a.status, a.msg_type, a.scope) == (
        "43b080713727",
        "hsas@dhs.gov",
        "Actual",
        "Alert",
        "Public",
    )
    assert a.sent_ms == int(
        datetime.datetime(2003, 4, 2, 19, 39, 1, tzinfo=datetime.UTC).timestamp() * 1000
    )
    [info] = a.infos
    assert info.language == "en-US"  # the schema's default
    assert info.categories == ["Security"] and info.severity == "Severe"
    assert info.parameters == [("HSAS", "ORANGE")]
    assert [ar.desc for ar in info.areas] == ["U.S. nationwide and interests worldwide"]
    assert a.expires_ms() is None and not a.signed


def test_thunderstorm_polygon_and_geocode():
    _, a = cap.load(d.thunderstorm())
    [area] = a.infos[0].areas
    [poly] = area.polygons
    assert len(poly.points) == 5 and poly.points[0] == poly.points[-1] == (21.80, 106.70)
    assert area.geocodes == [("SAME", "006109")]
    assert a.infos[0].event_codes == [("SAME", "SVR")]
    assert a.infos[0].response_types == ["Shelter"]
    assert a.expires_ms() is not None


def test_earthquake_update_references_and_circle():
    ref = "trinet@caltech.edu,TRI13970876.1,2003-06-11T20:30:00-07:00"
    _, a = cap.load(d.earthquake_update(references=ref))
    assert a.msg_type == "Update" and a.incidents == "TRI13970876.1"
    [r] = a.references
    assert (r.sender, r.identifier) == ("trinet@caltech.edu", "TRI13970876.1")
    assert a.infos[0].areas[0].circles == [cap.Circle(21.85, 106.76, 3.0)]


def test_multilingual_alert_speaks_the_vietnamese_block():
    _, a = cap.load(d.flood(communes=["c0", "c1"]))
    assert [i.language for i in a.infos] == ["vi-VN", "en-US"]
    assert a.info_for().event == "Lũ quét"
    assert len(a.areas()) == 4 and a.max_severity() == "Extreme"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&lol9;</identifier></alert>"""


@pytest.mark.parametrize(
    "raw,code",
    [
        (BILLION_LAUGHS, "doctype"),
        (
            b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&x;</identifier>'
            b"</alert>",
            "doctype",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE alert SYSTEM "http://127.0.0.1:9/cap.dtd">'
            b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"/>',
            "doctype",
        ),
        (
            b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&x;</identifier>'
            b"</alert>",
            "entities",
        ),
        (b"<alert", "malformed"),
        (b"\xff\xfe\x00garbage", "malformed"),
        (b"   ", "empty"),
        (b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.1"/>', "cap_version"),
        (b"<alert/>", "namespace"),
        (b'<feed xmlns="http://www.w3.org/2005/Atom"/>', "namespace"),
    ],
)
def test_hostile_and_wrong_documents_are_refused(raw, code):
    err = refusal(raw)
    assert err.code == code, (err.code, err.message)
    assert err.message and err.message_en and 400 <= err.status < 500


def test_xxe_file_content_never_appears():
    raw = (
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/hostname">]>'
        + d.flood(communes=["c0"]).split(b"?>", 1)[1].replace("Xã c0".encode(), b"&x;")
    )
    err = refusal(raw)
    assert err.code == "doctype"


def test_size_is_capped_before_parsing():
    big = d.flood(communes=["c0"]).replace(b"<description>", b"<description>" + b"x" * 600_000)
    err = refusal(big)
    assert err.code == "too_large" and err.status == 413
    assert cap.load(big, max_bytes=2_000_000)[1].identifier  # valid when allowed


@pytest.mark.parametrize(
    "old,new,code",
    [
        (b"<status>Actual", b"<status>Real", "schema"),
        (b"<scope>Public</scope>", b"", "schema"),
        (b"<msgType>Alert", b"<msgType>Update", "bad_references"),
        (
            b"21.80,106.70 21.80,106.82 21.90,106.82 21.90,106.70 21.80,106.70",
            b"21.80,106.70 21.80,106.82 21.80,106.70",
            "bad_area",
        ),
        (b"21.80,106.70 21.80,106.82", b"121.80,106.70 21.80,106.82", "bad_area"),
        (b"<sender>KSTO@NWS.NOAA.GOV", b"<sender>KSTO NWS", "schema"),
    ],
)
def test_values_the_schema_leaves_free_are_checked(old, new, code):
    raw = d.thunderstorm()
    assert old in raw
    assert refusal(raw.replace(old, new)).code == code


def test_sent_without_offset_is_refused():
    raw = d.thunderstorm(sent="2026-12-05T07:30:00")
    assert refusal(raw).code == "schema"


# --------------------------------------------------------------------------- signatures


def _cert(cn: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return (
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert.public_bytes(serialization.Encoding.PEM).decode(),
    )


def sign(raw: bytes, key: bytes, cert: str) -> bytes:
    from lxml import etree
    from signxml import XMLSigner

    signed = XMLSigner(c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#").sign(
        etree.fromstring(raw), key=key, cert=cert
    )
    return etree.tostring(signed, xml_declaration=True, encoding="UTF-8")


@pytest.fixture(scope="module")
def certs():
    return _cert("Trung tâm KTTV"), _cert("Kẻ lạ")


def test_signed_document_verifies_against_trusted_certificate_only(certs, tmp_path):
    (key, cert), (other_key, other_cert) = certs
    (tmp_path / "kttv.pem").write_text(cert)
    trusted = load_certificates([str(tmp_path)])
    assert len(trusted) == 1
    signed = sign(d.flood(communes=["c0"]), key, cert)
    root, a = cap.load(signed)  # the schema admits the ds:Signature at the end
    assert has_signature(root) and a.signed
    assert cap.read_alert(verify(root, trusted).root).identifier == a.identifier
    stranger = sign(d.flood(communes=["c0"]), other_key, other_cert)
    with pytest.raises(CapRefused) as err:
        verify(cap.load(stranger)[0], trusted)
    assert err.value.code == "bad_signature"
    tampered = signed.replace("cấp 3".encode(), "cấp 1".encode())
    with pytest.raises(CapRefused) as err:
        verify(cap.load(tampered)[0], trusted)
    assert err.value.code == "bad_signature"
    with pytest.raises(CapRefused) as err:
        verify(root, [])
    assert err.value.code == "untrusted_signature"


def test_service_signature_policy(db, settings, certs, tmp_path):
    from tests.alerts.conftest import make_env

    (key, cert), _ = certs
    (tmp_path / "kttv.pem").write_text(cert)
    env = make_env(
        db, settings, signature_policy="require", trusted_certs=[str(tmp_path / "kttv.pem")]
    )
    with pytest.raises(CapRefused) as err:
        env.alerts.receive(d.flood(communes=["c0"]), source="api", trusted_source=True)
    assert err.value.code == "unsigned" and err.value.status == 403
    out = env.alerts.receive(
        sign(d.flood("S-1", communes=["c0"]), key, cert), source="feed", trusted_source=False
    )
    assert out["state"] == "airing"


# --------------------------------------------------------------------------- fuzzing

SEED = d.thunderstorm(sent="2026-12-05T07:30:00+07:00")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_are_refused_cleanly(raw):
    try:
        cap.load(raw)
    except CapRefused as err:
        assert err.code and err.message
    else:  # pragma: no cover - random bytes are never a valid CAP alert
        raise AssertionError("random bytes accepted")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(SEED) - 1), st.integers(0, 40), st.binary(max_size=40))
def test_mutated_alerts_parse_or_are_refused(pos, cut, insert):
    raw = SEED[:pos] + insert + SEED[pos + cut :]
    try:
        _, a = cap.load(raw)
    except CapRefused as err:
        assert err.code and err.message and 400 <= err.status < 500
    else:
        assert a.identifier and a.sender and a.sent_ms
        for area in a.areas():
            for poly in area.polygons:
                assert poly.points[0] == poly.points[-1]


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_any_text_in_a_field_is_read_or_refused(text):
    from xml.sax.saxutils import escape

    raw = SEED.replace(b"SEVERE THUNDERSTORM WARNING", escape(text).encode("utf-8"))
    try:
        _, a = cap.load(raw)
    except CapRefused as err:
        assert err.code in ("malformed", "schema")
    else:
        # XML turns every line end into \n (XML 1.0 section 2.11).
        expected = text.replace("\r\n", "\n").replace("\r", "\n").strip()
        assert (a.infos[0].headline or "") == expected


def test_entity_declarations_in_utf16_are_refused_too():
    """The byte scan for <!DOCTYPE misses UTF-16; the parsed document's DTD check does not."""
    text = BILLION_LAUGHS.decode().replace(
        '<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>'
    )
    err = refusal(text.encode("utf-16"))
    assert err.code in ("doctype", "entities"), err.message
