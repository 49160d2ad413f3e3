"""The scheduler's view of the content package: look up audio, synthesise speech, and build
each node's download URL. Content errors (Vietnamese already) become scheduling errors so the
API answers them with the right 4xx."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from broadcasts.errors import ContentError, ContentNotFound
from scheduler.errors import InvalidBroadcast, ScheduleError, Unavailable

if TYPE_CHECKING:
    from broadcasts.store import ContentMeta, ContentStore


def _translate(exc: Exception) -> ScheduleError:
    message = getattr(exc, "message", None) or str(exc)
    status = getattr(exc, "http_status", 422)
    if status == 503:
        return Unavailable(message)
    return InvalidBroadcast(message)


@dataclass
class ContentGateway:
    """``store`` is a ``broadcasts.store.ContentStore``; ``synthesize`` defaults to
    ``broadcasts.bulletins.synthesize_bulletin``."""

    store: ContentStore
    synthesize_fn: Callable[..., ContentMeta] | None = None

    def get(self, content_id: str) -> ContentMeta | None:
        try:
            meta = self.store.get(content_id)
        except ContentNotFound:
            return None
        except (KeyError, LookupError, FileNotFoundError):
            return None
        except ContentError as exc:
            raise _translate(exc) from None
        return meta

    def require(self, content_id: str) -> ContentMeta:
        meta = self.get(content_id)
        if meta is None:
            raise InvalidBroadcast(f"Không tìm thấy nội dung «{content_id}» trong kho âm thanh.")
        return meta

    def synthesize(
        self,
        text: str,
        *,
        title: str,
        language: str,
        voice: str | None,
        engine: str | None,
        creator: str,
        owner_commune_id: int | None = None,
        urgent: bool = False,
    ) -> ContentMeta:
        fn = self.synthesize_fn
        if fn is None:
            from broadcasts.bulletins import synthesize_bulletin

            fn = synthesize_bulletin
        try:
            return fn(
                self.store,
                text,
                title=title,
                language=language,
                engine=engine,
                voice=voice,
                creator=creator,
                owner_commune_id=owner_commune_id,
                urgent=urgent,
            )
        except ContentError as exc:
            raise _translate(exc) from None

    def spoken_ms(self, text: str, *, language: str, voice: str | None, engine: str | None) -> int:
        """How long ``text`` takes to say: the cached spoken preview (the file "Nghe thử"
        plays), so the summary before sending shows a real length, not a guess. A language
        without a synthetic voice is refused here, before anything is scheduled."""
        try:
            from broadcasts.bulletins import check_language, preview
        except ModuleNotFoundError:  # pragma: no cover
            raise Unavailable("Kho nội dung âm thanh chưa sẵn sàng.") from None
        try:
            check_language(language, engine, self.store)
            return int(preview(self.store, text, engine=engine, voice=voice).duration_ms)
        except ContentError as exc:
            raise _translate(exc) from None

    def node_url(self, content_id: str, node_id: str, base_url: str) -> str:
        return self.store.node_url(content_id, node_id, base_url)

    def node_urls(self, content_id: str, node_ids: list[str], base_url: str) -> dict[str, str]:
        """Every node's download URL. The store's ``node_url`` reads the item each time; for a
        fleet-wide airing the URL of the first node is used as a template and only the node
        and its token (an HMAC, no database) change. Falls back to ``node_url`` per node if
        the template does not look as expected."""
        if not node_ids:
            return {}
        first = node_ids[0]
        url = self.store.node_url(content_id, first, base_url)
        token_fn = getattr(self.store, "node_token", None)
        marker = f"node={quote(first, safe='')}&token="
        if token_fn is None or marker not in url or not url.endswith(token_fn(content_id, first)):
            return {n: self.store.node_url(content_id, n, base_url) for n in node_ids}
        head = url[: url.index(marker)]
        return {
            n: f"{head}node={quote(n, safe='')}&token={token_fn(content_id, n)}" for n in node_ids
        }
