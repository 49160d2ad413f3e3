"""``loa nodes provision``: MQTT credentials and access rules for every registered cluster.

docs/protocol.md's access rules — a node publishes only under ``{root}/nodes/{its id}/``
(status, heartbeat, events) and reads only its own ``cmd``; only the controller publishes
commands — are enforced by the broker, not trusted to the devices. This module writes
everything the broker and the installers need from the register:

* ``credentials.csv`` (0600): one random password per node, for the installers who
  configure the devices; ``controller.env`` (0600): the controller's own MQTT login;
  ``controller-2.env`` … (``--controller-replicas``): one login per further controller;
  ``api.env``: the login of the API-only process (``loa serve --no-controller``), which may
  only publish commands.
* ``passwd``: Mosquitto's password file (PBKDF2-SHA512 hashes, made by Debian's
  ``mosquitto_passwd -U`` when installed, else by the same algorithm in Python).
* ``acl``: Mosquitto ACL, ``pattern`` lines with ``%u`` (username = node id).
* ``mosquitto.conf``: a broker config using both, with an optional TLS listener.
* ``emqx/users.csv``, ``emqx/acl.conf`` and ``emqx/loa.hocon``: the same users, rules and
  broker settings for an EMQX cluster.

The MQTT client id is the user name (``use_username_as_clientid``; EMQX
``mqtt.use_username_as_clientid``): otherwise node A, with its own password, could connect
as ``loa-controller`` or as node B and knock them off the broker, its clean session wiping
their persistent sessions and the commands queued in them (issue 17, finding 3). Hence one
login per process: two processes sharing a user name would knock each other off in turn.

Re-running keeps existing passwords (devices already installed keep working), adds new
nodes, and drops retired ones (their access is revoked); ``--rotate`` issues new passwords
for all. Every file is written to a temporary name and renamed, so a failure never leaves
a half-written set.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from loa.broker import MAX_PACKET_BYTES
from loa.credentials import CredentialsFileError, load_node_passwords
from loa.db import Database
from loa.errors import UserError
from loa.protocol import NODE_ID_RE
from loa.settings import Settings
from loa.text import spreadsheet_safe
from loa.timeutil import format_date, now_ms

CREDENTIALS_FILE = "credentials.csv"
CONTROLLER_ENV = "controller.env"
API_ENV = "api.env"
EMQX_CONF = "emqx/loa.hocon"
MAX_CONTROLLER_REPLICAS = 32
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"
CONF_FILE = "mosquitto.conf"
CREDENTIAL_COLUMNS = ("node_id", "mqtt_username", "mqtt_password", "commune", "village", "label")
USERNAME_RE = re.compile(r"^[A-Za-z0-9_-]{3,64}$")
# Mosquitto 2.0's own default for ``mosquitto_passwd``: PBKDF2-SHA512, 101 iterations.
PBKDF2_ITERATIONS = 101


class ProvisionError(Exception):
    """Bad arguments or register content; the message is for the user (Vietnamese)."""


@dataclass
class NodeCredential:
    node_id: str
    password: str
    commune: str = ""
    village: str = ""
    label: str = ""


@dataclass
class TlsOptions:
    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    port: int = 8883
    require_certificate: bool = False


@dataclass
class ProvisionResult:
    out_dir: Path
    nodes: list[NodeCredential]
    controller_user: str
    controller_password: str
    new_nodes: list[str] = field(default_factory=list)
    # Every process's own login: {user name: (env file, password)}; the first controller's
    # is ``controller_user`` / ``CONTROLLER_ENV``.
    process_logins: dict[str, tuple[str, str]] = field(default_factory=dict)
    api_user: str = ""
    revoked: list[str] = field(default_factory=list)
    hasher: str = ""

    def text(self) -> str:
        lines = [
            f"Đã cấp thông tin đăng nhập MQTT cho {len(self.nodes)} cụm loa "
            f"({len(self.new_nodes)} cụm mới, thu hồi {len(self.revoked)} cụm) "
            f"vào {self.out_dir}.",
            f"  {CREDENTIALS_FILE}: mật khẩu từng cụm cho người lắp đặt (chỉ chủ sở hữu đọc được)",
            f"  {CONTROLLER_ENV}: tài khoản MQTT của bộ điều khiển ({self.controller_user})",
            *(
                f"  {env}: tài khoản MQTT riêng của {user}"
                for user, (env, _) in self.process_logins.items()
                if user != self.controller_user
            ),
            f"  {PASSWORD_FILE}, {ACL_FILE}, {CONF_FILE}: cấu hình Mosquitto "
            f"(băm mật khẩu bằng {self.hasher})",
            "  emqx/users.csv, emqx/acl.conf, emqx/loa.hocon: cấu hình tương đương cho EMQX",
            "Nạp lại broker để áp dụng: docker compose kill -s HUP mosquitto "
            "(lần đầu có use_username_as_clientid: docker compose restart mosquitto)",
        ]
        return "\n".join(lines)


# --------------------------------------------------------------------------- hashing


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A Mosquitto 2 password hash (``$7$`` = PBKDF2-SHA512), as ``mosquitto_passwd``
    writes it; used only when that tool is not installed."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return (
        f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}$"
        f"{base64.b64encode(digest).decode()}"
    )


def mosquitto_passwd_tool() -> str | None:
    return shutil.which("mosquitto_passwd") or (
        "/usr/bin/mosquitto_passwd" if Path("/usr/bin/mosquitto_passwd").exists() else None
    )


def password_file_text(users: dict[str, str], *, use_tool: bool = True) -> tuple[str, str]:
    """Mosquitto password-file content for ``{username: password}`` and the hasher used.
    The real tool hashes a plain ``user:password`` file in place in one run (``-U``), which
    is fast for thousands of nodes; the plain file lives in a private temporary dir."""
    tool = mosquitto_passwd_tool() if use_tool else None
    if tool:
        with tempfile.TemporaryDirectory(prefix="loa-passwd-") as tmp:
            plain = Path(tmp) / "passwd"
            fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.writelines(f"{u}:{p}\n" for u, p in users.items())
            proc = subprocess.run(
                [tool, "-U", str(plain)], capture_output=True, text=True, timeout=600, check=False
            )
            if proc.returncode != 0:
                raise ProvisionError(f"mosquitto_passwd lỗi: {proc.stderr.strip()}")
            return plain.read_text(), "mosquitto_passwd"
    return "".join(f"{u}:{hash_password(p)}\n" for u, p in users.items()), "Python (PBKDF2)"


def emqx_users_csv(users: dict[str, str]) -> str:
    """EMQX 5 built-in database import file: ``sha256`` with the salt as suffix, the
    authenticator's default (``password_hash_algorithm {name = sha256, salt_position =
    suffix}``)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["user_id", "password_hash", "salt", "is_superuser"])
    for user, password in users.items():
        salt = secrets.token_hex(16)
        digest = hashlib.sha256((password + salt).encode()).hexdigest()
        w.writerow([user, digest, salt, "false"])
    return out.getvalue()


# --------------------------------------------------------------------------- rules


def acl_text(topic_root: str, controller_user: str | list[str], api_user: str | None = None) -> str:
    root = topic_root.rstrip("/")
    controllers = [controller_user] if isinstance(controller_user, str) else controller_user
    blocks = "".join(
        f"""user {user}
topic read {root}/#
topic write {root}/nodes/+/cmd
topic write {root}/controllers/#

"""
        for user in controllers
    )
    api = (
        ""
        if not api_user
        else (
            "# The API-only process (`loa serve --no-controller`): node commands, and the\n"
            "# wake that tells the leading controller's scheduler of a new broadcast.\n"
            f"user {api_user}\ntopic write {root}/nodes/+/cmd\n"
            f"topic write {root}/scheduler/wake\n\n"
        )
    )
    return f"""\
# Loa MQTT access rules (docs/protocol.md, "Access control"), generated by
# `loa nodes provision`. Mosquitto checks them on every publish, subscribe and delivery;
# anything not granted here is refused.

# The controller reads every node's uplink and is the only client that publishes commands.
# Several controllers also announce themselves and hand each other messages under
# {root}/controllers/ (docs/protocol.md, "Controller cluster topics"). One login each.
{blocks}{api}
# Every node (MQTT username = node id = client id): its own status, heartbeat and events, and only
# its own command topic.
pattern write {root}/nodes/%u/status
pattern write {root}/nodes/%u/heartbeat
pattern write {root}/nodes/%u/events
pattern read {root}/nodes/%u/cmd
"""


def emqx_acl_text(
    topic_root: str, controller_user: str | list[str], api_user: str | None = None
) -> str:
    root = topic_root.rstrip("/")
    controllers = [controller_user] if isinstance(controller_user, str) else controller_user
    rules = "".join(
        f"""{{allow, {{username, "{user}"}}, subscribe, ["{root}/#"]}}.
{{allow, {{username, "{user}"}}, publish, ["{root}/nodes/+/cmd",
                                                       "{root}/controllers/#"]}}.
{{deny, {{username, "{user}"}}, all, ["#"]}}.
"""
        for user in controllers
    )
    if api_user:
        rules += f"""{{allow, {{username, "{api_user}"}}, publish, ["{root}/nodes/+/cmd",
                                                       "{root}/scheduler/wake"]}}.
{{deny, {{username, "{api_user}"}}, all, ["#"]}}.
"""
    return f"""\
%% Loa MQTT access rules for EMQX 5 (file authorizer, acl.conf), generated by
%% `loa nodes provision`. Same rules as the Mosquitto `acl` file. Set
%% `authorization.no_match = deny` (emqx/loa.hocon) so that anything not granted here is
%% refused.
{rules}{{allow, all, publish, ["{root}/nodes/${{username}}/status",
                      "{root}/nodes/${{username}}/heartbeat",
                      "{root}/nodes/${{username}}/events"]}}.
{{allow, all, subscribe, ["{root}/nodes/${{username}}/cmd"]}}.
{{deny, all}}.
"""


def emqx_conf_text() -> str:
    """EMQX 5 settings Loa relies on (include from ``emqx.conf`` or copy in)."""
    return f"""\
# Loa settings for EMQX 5, generated by `loa nodes provision` on {format_date(now_ms())}.
# The client id is the user name: a node cannot connect under the controller's or another
# node's id and knock it off or wipe its session (docs/deploy.md, section 3.2).
mqtt.use_username_as_clientid = true
# Anything acl.conf does not grant is refused.
authorization.no_match = deny
"""


# Written after every listener line: in Mosquitto 2 it is a per-listener option, and one
# listener left without it would let a node take another client's id there.
USERNAME_AS_CLIENTID = "use_username_as_clientid true"


def mosquitto_conf_text(
    config_dir: str,
    data_dir: str,
    *,
    port: int = 1883,
    bind: str = "",
    tls: TlsOptions | None = None,
) -> str:
    """A complete Mosquitto 2 config using the generated password and ACL files. Paths are
    as the broker sees them (``/mosquitto/config`` in the compose file)."""
    listen = f"listener {port} {bind}".rstrip()
    lines = [
        "# Loa broker configuration, generated by `loa nodes provision` "
        f"on {format_date(now_ms())}.",
        "# One set of rules for every listener: passwords and ACL apply to plain and TLS.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {config_dir}/{PASSWORD_FILE}",
        f"acl_file {config_dir}/{ACL_FILE}",
        "",
        "# Queued QoS 1 commands for absent nodes survive a broker restart.",
        "persistence true",
        f"persistence_location {data_dir.rstrip('/')}/",
        "autosave_interval 60",
        "max_queued_messages 10000",
        f"max_packet_size {MAX_PACKET_BYTES}",
        "# A session nobody resumes for a week is dropped (a retired node, a replaced",
        "# controller replica); commands carry expires_at and are re-sent by the scheduler.",
        "persistent_client_expiration 7d",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "",
        "# Plain MQTT: for the private network only (controllers, VPN/APN for the nodes).",
        "# The client id is the user name (no client can take another's id and session).",
        listen,
        USERNAME_AS_CLIENTID,
    ]
    if tls is not None:
        lines += [
            "",
            "# MQTT over TLS: what nodes use across the public mobile network.",
            f"listener {tls.port} {bind}".rstrip(),
            USERNAME_AS_CLIENTID,
            f"certfile {tls.certfile}",
            f"keyfile {tls.keyfile}",
            "tls_version tlsv1.2",
        ]
        if tls.cafile is not None:
            lines.append(f"cafile {tls.cafile}")
        if tls.require_certificate:
            lines.append("require_certificate true")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- state


def new_password() -> str:
    """24 URL-safe characters (144 bits): typeable by an installer, never contains ':'."""
    return secrets.token_urlsafe(18)


def read_credentials(out_dir: Path) -> dict[str, str]:
    path = out_dir / CREDENTIALS_FILE
    return load_node_passwords(path) if path.exists() else {}


def read_controller_env(out_dir: Path, name: str = CONTROLLER_ENV) -> dict[str, str]:
    path = out_dir / name
    if not path.exists():
        return {}
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def registered_nodes(db: Database) -> list[NodeCredential]:
    """Current (not retired) nodes with the names an installer recognises."""
    from registry.models import Commune, Node, Village

    with db.session() as s:
        rows = s.execute(
            select(Node.id, Node.label, Village.name, Commune.name)
            .join(Village, Village.id == Node.village_id, isouter=True)
            .join(Commune, Commune.id == Village.commune_id, isouter=True)
            .where(Node.retired_ms.is_(None))
            .order_by(Node.id)
        ).all()
    return [
        NodeCredential(
            node_id=r[0], password="", label=r[1] or "", village=r[2] or "", commune=r[3] or ""
        )
        for r in rows
    ]


# --------------------------------------------------------------------------- writing


def _write_atomic(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def env_file_text(user: str, password: str, *, api: bool) -> str:
    who = "the Loa API-only process" if api else "one Loa controller"
    return (
        f"# MQTT login of {who} (docker compose env_file). One process per login: the\n"
        "# broker uses the user name as client id, so two would knock each other off.\n"
        f"LOA_MQTT_USERNAME={user}\nLOA_MQTT_PASSWORD={password}\n"
    )


def credentials_csv(nodes: list[NodeCredential], controller_user: str) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CREDENTIAL_COLUMNS)
    for n in nodes:
        w.writerow(
            [
                n.node_id,
                n.node_id,
                n.password,
                *(spreadsheet_safe(v) for v in (n.commune, n.village, n.label)),
            ]
        )
    return out.getvalue()


def provision(
    db: Database,
    out_dir: Path,
    *,
    controller_user: str = "loa-controller",
    topic_root: str = "loa/v1",
    rotate: bool = False,
    broker_config_dir: str | None = None,
    broker_data_dir: str = "/mosquitto/data",
    port: int = 1883,
    bind: str = "",
    tls: TlsOptions | None = None,
    use_tool: bool = True,
    api_user: str = "loa-api",
    controller_replicas: int = 1,
) -> ProvisionResult:
    for what, user in (("bộ điều khiển", controller_user), ("tiến trình API", api_user)):
        if not USERNAME_RE.match(user):
            raise ProvisionError(
                f"Tên tài khoản {what} không hợp lệ: {user!r} "
                "(3-64 ký tự A-Z, a-z, 0-9, '_' hoặc '-')."
            )
    if not 1 <= controller_replicas <= MAX_CONTROLLER_REPLICAS:
        raise ProvisionError(
            f"Số bộ điều khiển phải từ 1 đến {MAX_CONTROLLER_REPLICAS} "
            f"(nhận {controller_replicas})."
        )
    # One login per process: with the client id tied to the user name, two processes under
    # one name would knock each other off the broker.
    env_files = {controller_user: CONTROLLER_ENV}
    for k in range(2, controller_replicas + 1):
        env_files[f"{controller_user}-{k}"] = f"controller-{k}.env"
    if api_user in env_files:
        raise ProvisionError(
            f"Tài khoản tiến trình API {api_user!r} trùng tài khoản bộ điều "
            "khiển; chọn tên khác bằng --api-user."
        )
    env_files[api_user] = API_ENV
    if tls is not None and broker_config_dir is None:
        # Same filesystem as the broker: catch a mistyped path now, not at broker start.
        for label, path in (("chứng chỉ", tls.certfile), ("khóa", tls.keyfile), ("CA", tls.cafile)):
            if path is not None and not Path(path).is_file():
                raise ProvisionError(f"Không tìm thấy tệp {label} TLS: {path}")
    out_dir = Path(out_dir)
    nodes = registered_nodes(db)
    bad = [n.node_id for n in nodes if not NODE_ID_RE.match(n.node_id)]
    if bad:
        raise ProvisionError(
            "Mã cụm loa không dùng được làm tên đăng nhập MQTT: " + ", ".join(bad[:10])
        )
    clash = sorted({n.node_id for n in nodes} & set(env_files))
    if clash:
        raise ProvisionError(
            f"Tài khoản bộ điều khiển {clash[0]!r} trùng mã một cụm "
            "loa; chọn tên khác bằng --controller-user / --api-user."
        )

    previous = {} if rotate else read_credentials(out_dir)
    for n in nodes:
        n.password = previous.get(n.node_id) or new_password()
    process_logins: dict[str, tuple[str, str]] = {}
    for user, env_name in env_files.items():
        env = {} if rotate else read_controller_env(out_dir, env_name)
        password = env.get("LOA_MQTT_PASSWORD") if env.get("LOA_MQTT_USERNAME") == user else None
        process_logins[user] = (env_name, password or new_password())
    controller_password = process_logins[controller_user][1]

    users = {u: pw for u, (_, pw) in process_logins.items()} | {
        n.node_id: n.password for n in nodes
    }
    passwd, hasher = password_file_text(users, use_tool=use_tool)
    config_dir = broker_config_dir or str(out_dir.resolve())
    controllers = [u for u in env_files if u != api_user]
    files = {
        CREDENTIALS_FILE: (credentials_csv(nodes, controller_user), 0o600),
        **{
            env_name: (env_file_text(user, password, api=user == api_user), 0o600)
            for user, (env_name, password) in process_logins.items()
        },
        PASSWORD_FILE: (passwd, 0o600),
        ACL_FILE: (acl_text(topic_root, controllers, api_user), 0o644),
        CONF_FILE: (
            mosquitto_conf_text(config_dir, broker_data_dir, port=port, bind=bind, tls=tls),
            0o644,
        ),
        "emqx/users.csv": (emqx_users_csv(users), 0o600),
        "emqx/acl.conf": (emqx_acl_text(topic_root, controllers, api_user), 0o644),
        EMQX_CONF: (emqx_conf_text(), 0o644),
    }
    # Render everything first: nothing is replaced unless every file could be produced.
    for name, (text, mode) in files.items():
        _write_atomic(out_dir / name, text, mode)
    current = {n.node_id for n in nodes}
    return ProvisionResult(
        out_dir=out_dir,
        nodes=nodes,
        controller_user=controller_user,
        controller_password=controller_password,
        process_logins=process_logins,
        api_user=api_user,
        new_nodes=sorted(current - set(previous)),
        revoked=sorted(set(previous) - current),
        hasher=hasher,
    )


def chown_broker_files(out_dir: Path, owner: str) -> None:
    """Give the broker's files to the broker's user (1883:1883 in the eclipse-mosquitto
    image), so they can stay unreadable to everyone else."""
    try:
        uid_s, _, gid_s = owner.partition(":")
        uid, gid = int(uid_s), int(gid_s or uid_s)
    except ValueError:
        raise ProvisionError(
            f"--chown cần dạng UID:GID, ví dụ 1883:1883 (nhận {owner!r})"
        ) from None
    for name in (PASSWORD_FILE, ACL_FILE, CONF_FILE):
        try:
            os.chown(out_dir / name, uid, gid)
        except PermissionError:
            raise ProvisionError(
                "Không đổi được chủ sở hữu tệp (cần chạy với quyền root)"
            ) from None


# --------------------------------------------------------------------------- CLI


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    nodes = sub.add_parser("nodes", help="tài khoản MQTT của các cụm loa")
    nodes_sub = nodes.add_subparsers(dest="nodes_command", metavar="LỆNH")
    p = nodes_sub.add_parser(
        "provision",
        help="cấp mật khẩu MQTT cho từng cụm loa và sinh cấu hình broker",
        description="Sinh mật khẩu riêng cho từng cụm loa trong sổ đăng ký (credentials.csv), "
        "tệp mật khẩu và ACL của Mosquitto, mosquitto.conf (tùy chọn TLS) và "
        "cấu hình tương đương cho EMQX. Chạy lại: giữ mật khẩu cũ, thêm cụm mới, "
        "thu hồi cụm đã ngừng.",
    )
    p.add_argument("--out", required=True, metavar="THƯ_MỤC", help="thư mục ghi các tệp")
    p.add_argument("--db", metavar="URL", help="CSDL sổ đăng ký (mặc định LOA_DATABASE_URL)")
    p.add_argument(
        "--controller-user",
        default="loa-controller",
        help="tài khoản MQTT của bộ điều khiển (mặc định loa-controller)",
    )
    p.add_argument(
        "--controller-replicas",
        type=int,
        default=1,
        metavar="N",
        help="số bộ điều khiển chạy cùng lúc; mỗi bộ một tài khoản riêng "
        "(controller.env, controller-2.env, …; mặc định 1)",
    )
    p.add_argument(
        "--api-user",
        default="loa-api",
        help="tài khoản MQTT của tiến trình chỉ-API 'loa serve --no-controller' "
        "(api.env; mặc định loa-api)",
    )
    p.add_argument("--rotate", action="store_true", help="cấp mật khẩu mới cho tất cả")
    p.add_argument(
        "--broker-config-dir",
        metavar="ĐƯỜNG_DẪN",
        help="thư mục chứa passwd/acl như broker thấy (mặc định: --out; "
        "trong docker compose: /mosquitto/config)",
    )
    p.add_argument(
        "--broker-data-dir",
        default="/mosquitto/data",
        metavar="ĐƯỜNG_DẪN",
        help="thư mục lưu phiên của broker (mặc định /mosquitto/data)",
    )
    p.add_argument("--port", type=int, default=1883, help="cổng MQTT thường (mặc định 1883)")
    p.add_argument("--bind", default="", help="địa chỉ lắng nghe (mặc định: mọi địa chỉ)")
    p.add_argument("--tls-cert", metavar="TỆP", help="chứng chỉ máy chủ (PEM) cho cổng TLS")
    p.add_argument("--tls-key", metavar="TỆP", help="khóa riêng (PEM) của chứng chỉ")
    p.add_argument(
        "--tls-ca", metavar="TỆP", help="CA để kiểm tra chứng chỉ thiết bị (bật --tls-require-cert)"
    )
    p.add_argument("--tls-port", type=int, default=8883, help="cổng MQTT/TLS (mặc định 8883)")
    p.add_argument(
        "--tls-require-cert",
        action="store_true",
        help="bắt buộc thiết bị trình chứng chỉ do --tls-ca cấp",
    )
    p.add_argument(
        "--chown",
        metavar="UID:GID",
        help="đổi chủ passwd/acl/mosquitto.conf (vd. 1883:1883 cho eclipse-mosquitto)",
    )
    p.set_defaults(func=cmd_provision)


def cmd_provision(args: argparse.Namespace) -> int:

    if bool(args.tls_cert) != bool(args.tls_key):
        raise UserError("Cần cả --tls-cert và --tls-key để bật cổng TLS.")
    if args.tls_require_cert and not args.tls_ca:
        raise UserError("--tls-require-cert cần --tls-ca (CA cấp chứng chỉ cho thiết bị).")
    tls = None
    if args.tls_cert:
        tls = TlsOptions(
            certfile=Path(args.tls_cert),
            keyfile=Path(args.tls_key),
            cafile=Path(args.tls_ca) if args.tls_ca else None,
            port=args.tls_port,
            require_certificate=args.tls_require_cert,
        )
    settings = Settings()
    db = Database(args.db or settings.resolved_database_url())
    try:
        result = provision(
            db,
            Path(args.out),
            controller_user=args.controller_user,
            topic_root=settings.topic_root,
            rotate=args.rotate,
            broker_config_dir=args.broker_config_dir,
            broker_data_dir=args.broker_data_dir,
            port=args.port,
            bind=args.bind,
            tls=tls,
            api_user=args.api_user,
            controller_replicas=args.controller_replicas,
        )
        if args.chown:
            chown_broker_files(Path(args.out), args.chown)
    except (ProvisionError, CredentialsFileError) as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"Không ghi được vào {args.out}: {exc.strerror}") from None
    except SQLAlchemyError as exc:
        raise UserError(
            "Không đọc được sổ đăng ký từ CSDL (đã chạy 'alembic upgrade head' "
            f"và nhập sổ đăng ký chưa?): {type(exc).__name__}"
        ) from None
    finally:
        db.dispose()
    print(result.text())
    return 0
