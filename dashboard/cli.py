"""``loa user``: accounts from the command line (first admin, scripted set-up, lost password).

Passwords are read with a hidden prompt (twice), or from standard input with
``--password-stdin`` for scripts; never from the command line, where ``ps`` would show them.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from sqlalchemy import select

from dashboard.models import ROLES, User
from dashboard.security import (
    AccountError,
    audit,
    create_user,
    find_user,
    resolve_communes,
    set_password,
    update_user,
)
from loa.db import Database
from loa.errors import UserError
from loa.settings import get_settings


def _db() -> Database:
    db = Database(get_settings().resolved_database_url())
    db.create_all()
    return db


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Mật khẩu: ")
        if getpass.getpass("Nhập lại mật khẩu: ") != password:
            raise UserError("Hai lần nhập mật khẩu không khớp")
    if not password:
        raise UserError("Mật khẩu trống")
    return password


def _communes_arg(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def cmd_add(args: argparse.Namespace) -> int:
    password = _read_password(args)
    with _db().session() as s:
        try:
            user = create_user(
                s,
                args.name,
                password,
                args.role,
                resolve_communes(s, _communes_arg(args.communes)),
                args.display_name or "",
            )
        except AccountError as exc:
            raise UserError(str(exc)) from None
        audit(
            s,
            "user.create",
            username="(cli)",
            target=user.username,
            ip="cli",
            detail={"role": user.role, "communes": sorted(user.commune_ids)},
        )
        print(f"Đã tạo tài khoản {user.username} ({user.role})")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    password = _read_password(args)
    with _db().session() as s:
        try:
            user = find_user(s, args.name)
            set_password(s, user, password)
        except AccountError as exc:
            raise UserError(str(exc)) from None
        audit(s, "user.password_reset", username="(cli)", target=user.username, ip="cli")
        print(f"Đã đổi mật khẩu của {user.username}; các phiên đăng nhập cũ đã bị hủy")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    with _db().session() as s:
        try:
            user = find_user(s, args.name)
            communes = (
                resolve_communes(s, _communes_arg(args.communes))
                if args.communes is not None
                else None
            )
            active = {"yes": True, "no": False}.get(args.active or "")
            update_user(s, user, role=args.role, commune_ids=communes, active=active)
        except AccountError as exc:
            raise UserError(str(exc)) from None
        audit(
            s,
            "user.update",
            username="(cli)",
            target=user.username,
            ip="cli",
            detail={"role": user.role, "communes": sorted(user.commune_ids), "active": user.active},
        )
        print(f"Đã cập nhật {user.username}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _db().session() as s:
        for u in s.scalars(select(User).order_by(User.username_key)):
            scope = u.scope_commune_ids()
            where = "toàn tỉnh" if scope is None else ",".join(str(c) for c in sorted(scope))
            print(f"{u.username}\t{u.role}\t{'đang dùng' if u.active else 'đã khóa'}\t{where}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("user", help="quản lý tài khoản (cán bộ xã, kỹ thuật, tỉnh)")
    sub = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    add = sub.add_parser("add", help="tạo tài khoản")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--communes", help="mã xã, cách nhau bởi dấu phẩy (bắt buộc với commune)")
    add.add_argument("--display-name")
    add.add_argument("--password-stdin", action="store_true", help="đọc mật khẩu từ stdin")
    add.set_defaults(func=cmd_add)

    pw = sub.add_parser("passwd", help="đặt lại mật khẩu")
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true", help="đọc mật khẩu từ stdin")
    pw.set_defaults(func=cmd_passwd)

    st = sub.add_parser("set", help="đổi vai trò, xã, khóa/mở khóa")
    st.add_argument("name")
    st.add_argument("--role", choices=ROLES)
    st.add_argument("--communes", help="mã xã, cách nhau bởi dấu phẩy; rỗng = toàn tỉnh")
    st.add_argument("--active", choices=("yes", "no"))
    st.set_defaults(func=cmd_set)

    ls = sub.add_parser("list", help="liệt kê tài khoản")
    ls.set_defaults(func=cmd_list)
