"""HEAD on every GET route (RFC 9110: a server answering GET should answer
HEAD alike): the request runs as a GET and its body is dropped."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self._app(scope, receive, send)
            return

        body_sent = False

        async def without_body(message: Message) -> None:
            # The headers (Content-Length too) as for GET; one empty body.
            nonlocal body_sent
            if message["type"] == "http.response.body":
                if body_sent:
                    return
                body_sent = True
                message = {**message, "body": b"", "more_body": False}
            await send(message)

        await self._app({**scope, "method": "GET"}, receive, without_body)
