"""A user's alarm notifications (issue 18, item 7): the settings page and its API.

    GET    /settings/notifications                 the page
    GET    /api/v1/notifications/me                subscriptions, choices, recent deliveries
    PUT    /api/v1/notifications/me/{channel}      save e-mail or webhook (channel: email|webhook)
    DELETE /api/v1/notifications/me/{channel}      stop that channel

Sending is ``controller.notify`` (outbox, retries, its own thread); this only edits rows."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy import delete, select

from controller.alarms import SEVERITY_LABELS_VI
from controller.notify import (
    NotifyDelivery,
    NotifySubscription,
    recent_deliveries,
    save_subscription,
)
from dashboard.deps import DbSession
from dashboard.models import User
from dashboard.routes.ui import page_user, render, scoped_communes
from dashboard.security import audit, current_user

router = APIRouter(tags=["notifications"])
Channel = Literal["email", "webhook"]


class SubscriptionIn(BaseModel):
    address: str = Field(max_length=500, description="e-mail address or webhook URL")
    severities: list[int] = Field(default=[3, 2, 1], max_length=3)
    communes: list[int] = Field(
        default=[], max_length=500, description="[] = every commune in the user's scope"
    )
    active: bool = True
    secret: str | None = Field(
        None, max_length=200, description='webhook HMAC key; null keeps it, "" removes it'
    )


class SubscriptionOut(BaseModel):
    channel: Channel
    address: str
    severities: list[int]
    communes: list[int]
    active: bool
    signed: bool = Field(description="whether webhook bodies are HMAC-signed (key not shown)")


class Choice(BaseModel):
    id: int
    name: str


class DeliveryOut(BaseModel):
    id: int
    channel: str
    status: str
    status_label: str
    attempts: int
    error: str | None
    alarm: str
    raised: str
    next_try: str | None
    sent: str | None


class NotifySettingsOut(BaseModel):
    email: SubscriptionOut | None
    webhook: SubscriptionOut | None
    email_ready: bool = Field(description="whether the server has an SMTP server set")
    severities: list[Choice]
    communes: list[Choice]
    deliveries: list[DeliveryOut]


class StoppedOut(BaseModel):
    channel: Channel
    stopped: bool


def _out(sub: NotifySubscription) -> SubscriptionOut:
    return SubscriptionOut(
        channel=sub.channel,
        address=sub.address,
        severities=list(sub.severities or []),
        communes=list(sub.communes or []),
        active=sub.active,
        signed=bool(sub.secret),
    )


@router.get("/api/v1/notifications/me", response_model=NotifySettingsOut)
def my_notifications(
    request: Request, s: DbSession, user: User = Depends(current_user)
) -> NotifySettingsOut:
    subs = {
        sub.channel: _out(sub)
        for sub in s.scalars(
            select(NotifySubscription).where(NotifySubscription.username == user.username)
        )
    }
    settings = request.app.state.ctx.settings
    return NotifySettingsOut(
        email=subs.get("email"),
        webhook=subs.get("webhook"),
        email_ready=bool(getattr(settings, "smtp_host", "")),
        severities=[
            Choice(id=k, name=v) for k, v in sorted(SEVERITY_LABELS_VI.items(), reverse=True)
        ],
        communes=[Choice(id=c.id, name=c.name) for c in scoped_communes(s, user)],
        deliveries=[DeliveryOut(**d) for d in recent_deliveries(s, user.username)],
    )


@router.put("/api/v1/notifications/me/{channel}", response_model=SubscriptionOut)
def save_my_subscription(
    channel: Channel,
    body: SubscriptionIn,
    request: Request,
    s: DbSession,
    user: User = Depends(current_user),
) -> SubscriptionOut:
    sub = save_subscription(
        s,
        user.username,
        channel,
        address=body.address,
        severities=body.severities,
        communes=body.communes,
        active=body.active,
        secret=body.secret,
        scope=user.scope_commune_ids(),
        webhook_networks=request.app.state.ctx.settings.notify_webhook_allowed_networks,
    )
    audit(
        s,
        "notify.subscribe",
        user=user,
        target=channel,
        request=request,
        detail={"severities": sub.severities, "communes": sub.communes, "active": sub.active},
    )
    return _out(sub)


@router.delete("/api/v1/notifications/me/{channel}", response_model=StoppedOut)
def stop_my_subscription(
    channel: Channel, request: Request, s: DbSession, user: User = Depends(current_user)
) -> StoppedOut:
    ids = select(NotifySubscription.id).where(
        NotifySubscription.username == user.username, NotifySubscription.channel == channel
    )
    s.execute(delete(NotifyDelivery).where(NotifyDelivery.subscription_id.in_(ids)))
    gone = s.execute(
        delete(NotifySubscription).where(
            NotifySubscription.username == user.username, NotifySubscription.channel == channel
        )
    )
    audit(s, "notify.unsubscribe", user=user, target=channel, request=request)
    return StoppedOut(channel=channel, stopped=bool(gone.rowcount))


@router.get("/settings/notifications", response_class=HTMLResponse, include_in_schema=False)
def notifications_page(request: Request, user: User = Depends(page_user)) -> HTMLResponse:
    return render(request, "notifications.html", user, page={"view": "notify"})
