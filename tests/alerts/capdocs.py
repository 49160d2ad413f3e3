"""CAP 1.2 documents for the tests, written in the shapes of the OASIS CAP 1.2 specification's
appendix A examples (homeland security advisory, severe thunderstorm warning with a polygon,
earthquake report as an Update, multilingual alert with several info blocks) and of the
feeds a Vietnamese hydro-meteorological service would send (Vietnamese and English info
blocks, several areas, geocodes of communes). Times are relative to "now" so that expiry
rules can be tested both ways. Coordinates are moved to Lạng Sơn where the area matters."""

from __future__ import annotations

from datetime import datetime, timedelta
from xml.sax.saxutils import escape

from loa.timeutil import ICT

NS = "urn:oasis:names:tc:emergency:cap:1.2"


def t(minutes: float = 0, *, base: datetime | None = None) -> str:
    dt = (base or datetime.now(tz=ICT)) + timedelta(minutes=minutes)
    return dt.replace(microsecond=0).isoformat()


def homeland_security(identifier: str = "43b080713727", sent: str | None = None) -> bytes:
    """Spec A.1: a nationwide advisory with no polygon (area description only)."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="{NS}">
  <identifier>{identifier}</identifier>
  <sender>hsas@dhs.gov</sender>
  <sent>{sent or t()}</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <category>Security</category>
    <event>Homeland Security Advisory System Update</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <senderName>U.S. Government, Department of Homeland Security</senderName>
    <headline>Homeland Security Sets Code ORANGE</headline>
    <description>The Department of Homeland Security has elevated the Homeland Security
    Advisory System threat level to ORANGE / High in response to intelligence.</description>
    <instruction>A High Risk of Terrorist Attacks has been identified.</instruction>
    <web>http://www.dhs.gov/dhspublic/display?theme=29</web>
    <parameter><valueName>HSAS</valueName><value>ORANGE</value></parameter>
    <resource>
      <resourceDesc>Image file (GIF)</resourceDesc>
      <mimeType>image/gif</mimeType>
      <uri>http://www.dhs.gov/dhspublic/getAdvisoryImage</uri>
    </resource>
    <area><areaDesc>U.S. nationwide and interests worldwide</areaDesc></area>
  </info>
</alert>""".encode()


# Around Lạng Sơn city (21.85N 106.76E): a ring that holds the test clusters placed there.
CITY_POLYGON = "21.80,106.70 21.80,106.82 21.90,106.82 21.90,106.70 21.80,106.70"


def thunderstorm(
    identifier: str = "KSTO1055887203",
    *,
    polygon: str = CITY_POLYGON,
    expires_in_min: float = 60,
    sender: str = "KSTO@NWS.NOAA.GOV",
    status: str = "Actual",
    sent: str | None = None,
) -> bytes:
    """Spec A.2: severe thunderstorm warning with a polygon and a geocode (moved here)."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="{NS}">
  <identifier>{identifier}</identifier>
  <sender>{sender}</sender>
  <sent>{sent or t()}</sent>
  <status>{status}</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <category>Met</category>
    <event>SEVERE THUNDERSTORM</event>
    <responseType>Shelter</responseType>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Observed</certainty>
    <eventCode><valueName>SAME</valueName><value>SVR</value></eventCode>
    <expires>{t(expires_in_min)}</expires>
    <senderName>NATIONAL WEATHER SERVICE SACRAMENTO CA</senderName>
    <headline>SEVERE THUNDERSTORM WARNING</headline>
    <description>AT 254 PM PDT, NATIONAL WEATHER SERVICE DOPPLER RADAR INDICATED A SEVERE
    THUNDERSTORM CAPABLE OF PRODUCING HAIL AND DAMAGING WINDS.</description>
    <instruction>TAKE COVER IN A SUBSTANTIAL SHELTER UNTIL THE STORM PASSES.</instruction>
    <contact>BARUFFALDI/JUSKIE</contact>
    <area>
      <areaDesc>EXTREME NORTH CENTRAL TUOLUMNE COUNTY</areaDesc>
      <polygon>{polygon}</polygon>
      <geocode><valueName>SAME</valueName><value>006109</value></geocode>
    </area>
  </info>
</alert>""".encode()


def earthquake_update(
    identifier: str = "TRI13970876.2", *, references: str, circle: str = "21.85,106.76 3"
) -> bytes:
    """Spec A.3: an earthquake report as an Update referencing the first report, with a
    circle area; Minor/Past, so it never airs automatically."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="{NS}">
  <identifier>{identifier}</identifier>
  <sender>trinet@caltech.edu</sender>
  <sent>{t()}</sent>
  <status>Actual</status>
  <msgType>Update</msgType>
  <scope>Public</scope>
  <references>{references}</references>
  <incidents>TRI13970876.1</incidents>
  <info>
    <category>Geo</category>
    <event>Earthquake</event>
    <urgency>Past</urgency>
    <severity>Minor</severity>
    <certainty>Observed</certainty>
    <senderName>Southern California Seismic Network (TriNet)</senderName>
    <headline>EQ 3.4 Imperial County CA</headline>
    <description>A minor earthquake measuring 3.4 on the Richter scale occurred.</description>
    <parameter><valueName>EventID</valueName><value>13970876</value></parameter>
    <parameter><valueName>Magnitude</valueName><value>3.4 Ml</value></parameter>
    <area><areaDesc>1 mi. WSW of Brawley, CA</areaDesc><circle>{circle}</circle></area>
  </info>
</alert>""".encode()


def flood(
    identifier: str = "KTTV-LS-2026-001",
    *,
    communes: list[str],
    sender: str = "canhbao@kttv.gov.vn",
    status: str = "Actual",
    msg_type: str = "Alert",
    references: str | None = None,
    severity: str = "Extreme",
    expires_in_min: float = 120,
    sent: str | None = None,
    value_name: str = "MA_XA",
    instruction: str = "Bà con không đi qua ngầm tràn, di chuyển người và tài sản lên chỗ cao.",
) -> bytes:
    """A Vietnamese flash-flood alert in the shape of a national hydro-met feed: a Vietnamese
    and an English info block (several languages), one area per commune by geocode."""
    refs = f"<references>{escape(references)}</references>" if references else ""
    areas = "".join(
        f"<area><areaDesc>Xã {c}</areaDesc><geocode><valueName>{value_name}</valueName>"
        f"<value>{c}</value></geocode></area>"
        for c in communes
    )
    info = []
    for lang, event, headline, instr in (
        ("vi-VN", "Lũ quét", "Cảnh báo lũ quét, sạt lở đất cấp 3", instruction),
        (
            "en-US",
            "Flash flood",
            "Flash flood and landslide warning, level 3",
            "Do not cross spillways; move to higher ground.",
        ),
    ):
        info.append(f"""<info>
    <language>{lang}</language>
    <category>Met</category><category>Geo</category>
    <event>{event}</event>
    <responseType>Evacuate</responseType>
    <urgency>Immediate</urgency>
    <severity>{severity}</severity>
    <certainty>Likely</certainty>
    <expires>{t(expires_in_min)}</expires>
    <senderName>Đài Khí tượng Thủy văn tỉnh Lạng Sơn</senderName>
    <headline>{headline}</headline>
    <description>Mưa lớn 150 mm trong 6 giờ qua.</description>
    <instruction>{instr}</instruction>
    {areas}
  </info>""")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="{NS}">
  <identifier>{identifier}</identifier>
  <sender>{sender}</sender>
  <sent>{sent or t()}</sent>
  <status>{status}</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>
  {refs}
  {"".join(info)}
</alert>""".encode()


def cancel(identifier: str, *, references: str, sender: str = "canhbao@kttv.gov.vn") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="{NS}">
  <identifier>{identifier}</identifier>
  <sender>{sender}</sender>
  <sent>{t()}</sent>
  <status>Actual</status>
  <msgType>Cancel</msgType>
  <scope>Public</scope>
  <references>{escape(references)}</references>
</alert>""".encode()


def ack(identifier: str = "ACK-1", references: str = "a@b,x,2026-01-01T00:00:00+07:00") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="{NS}">
  <identifier>{identifier}</identifier>
  <sender>partner@example.org</sender>
  <sent>{t()}</sent>
  <status>Actual</status>
  <msgType>Ack</msgType>
  <scope>Public</scope>
  <references>{references}</references>
</alert>""".encode()


def ref_of(doc: bytes) -> str:
    """ "sender,identifier,sent" of a document, for references."""
    from alerts.cap import load

    _, a = load(doc)
    return f"{a.sender},{a.identifier},{a.sent}"
