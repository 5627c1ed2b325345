"""
The twistd plugin's body: command-line options and the service tree.

This is the only module that touches the global reactor.
"""

import os
import secrets
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints, utils
from twisted.logger import Logger

from claudews import config, options
from claudews.registry import Registry
from claudews.websocket import ServerFactory

Options = config.Options

TOKEN_FILE = "auth_token"

#: Random bytes in a generated token: 256 bits, 43 URL-safe characters.
TOKEN_BYTES = 32

#: A configured or stored token shorter than this is logged as weak: 32
#: random URL-safe characters hold 192 bits.
MIN_TOKEN_CHARS = 32

_log = Logger()

#: Seconds to wait for C{claude --version}.
VERSION_TIMEOUT = 30.0


def load_token(settings: Any) -> tuple[str | None, bool]:
    """
    The token clients must present, and whether it was generated just now.

    A token from the configuration wins; otherwise the one stored in
    DATA/auth_token, created (mode 0600) on first start. Deleting the file
    and restarting makes a new one.
    """
    if settings.no_auth:
        return None, False
    if settings.token:
        return settings.token, False
    os.makedirs(settings.data, mode=0o700, exist_ok=True)
    path = os.path.join(settings.data, TOKEN_FILE)
    try:
        with open(path, encoding="ascii") as f:
            token = f.read().strip()
            mode = os.fstat(f.fileno()).st_mode
        if token:
            if mode & 0o077:
                # Whoever can read it can run commands as this user.
                os.chmod(path, 0o600)
                _log.warn(
                    "{file} was readable by other users; it is now mode 0600",
                    file=path,
                )
            return token, False
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(TOKEN_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        # O_CREAT's mode only applies to a new file: an existing empty one
        # keeps its own.
        os.fchmod(f.fileno(), 0o600)
        f.write(token + "\n")
    return token, True


class ClaudewsService(service.MultiService):
    """
    Starts the projects, then listens; stops in the order that loses
    nothing: stop accepting, finish the projects (their last events still
    reach connected clients), then close the connections with 1001.
    """

    _log = Logger()

    def __init__(self, settings: Any, reactor: Any) -> None:
        super().__init__()
        self._reactor = reactor
        self.settings = settings
        self.token, self._token_is_new = load_token(settings)
        self.registry = Registry(settings, reactor)
        self.registry.setServiceParent(self)
        self._claude_version: defer.Deferred | None = None
        self.factory = ServerFactory(
            settings=settings,
            registry=self.registry,
            token=self.token,
            validate_options=lambda given: options.validate_prompt_options(
                given, settings
            ),
            option_flags=options.option_flags,
            claude_version=self.claude_version,
            reactor=reactor,
        )
        self.registry.fanout = self.factory.fanout
        self._port: Any = None

    def startService(self) -> None:
        super().startService()
        endpoint = endpoints.serverFromString(self._reactor, self.settings.listen)
        d = endpoint.listen(self.factory)
        d.addCallbacks(self._listening, self._cannot_listen)
        self._ask_version()

    def _listening(self, port: Any) -> None:
        self._port = port
        address = port.getHost()
        host = getattr(address, "host", None)
        self.factory.listening_on(host, getattr(address, "port", None))
        scheme = "wss" if self.settings.listen.startswith(("ssl:", "tls:")) else "ws"
        if host in (None, "0.0.0.0", "::"):
            shown = "localhost"
        else:
            shown = "[%s]" % (host,) if ":" in host else host
        url = "%s://%s:%s/ws" % (scheme, shown, getattr(address, "port", ""))
        if self.token is not None and len(self.token) < MIN_TOKEN_CHARS:
            self._log.warn(
                "The token is only {length} characters long and may be guessed;"
                " use at least {least} random ones",
                length=len(self.token),
                least=MIN_TOKEN_CHARS,
            )
        if self.token is None:
            self._log.warn("Authentication is OFF (--no-auth): anyone who can connect can run commands")
            self._log.info("claudews listening on {url}", url=url)
        elif self._token_is_new:
            # The one time the token is logged: it was just generated.
            self._log.info(
                "claudews listening; connect to {url}?token={token} (token stored in {file})",
                url=url,
                token=self.token,
                file=os.path.join(self.settings.data, TOKEN_FILE),
            )
        elif self.settings.token:
            self._log.info(
                "claudews listening on {url} (token from the configuration)", url=url
            )
        else:
            self._log.info(
                "claudews listening on {url} (token in {file})",
                url=url,
                file=os.path.join(self.settings.data, TOKEN_FILE),
            )

    def _cannot_listen(self, failure: Any) -> None:
        self._log.failure("Cannot listen on {listen}", failure, listen=self.settings.listen)
        self._reactor.stop()

    def claude_version(self) -> defer.Deferred:
        """
        The CLI's C{--version}, asked once (at start); None if it cannot say.
        """
        if self._claude_version is None:
            self._ask_version()
        result: defer.Deferred = defer.Deferred()
        self._claude_version.addBoth(lambda value: (result.callback(value), value)[1])
        return result

    def _ask_version(self) -> None:
        d = defer.maybeDeferred(
            utils.getProcessOutput,
            self.settings.claude_bin,
            ["--version"],
            env=dict(os.environ),
            reactor=self._reactor,
        )
        d.addTimeout(VERSION_TIMEOUT, self._reactor)

        def failed(failure: Any) -> None:
            self._log.warn(
                "Could not run {bin} --version: {error}",
                bin=self.settings.claude_bin,
                error=failure.getErrorMessage(),
            )
            return None

        d.addCallbacks(
            lambda output: output.decode("utf-8", "replace").strip()[:200] or None,
            failed,
        )
        self._claude_version = d

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        if self._port is not None:
            yield self._port.stopListening()
        yield super().stopService()
        yield self.factory.close_all()


def makeService(options: Any) -> service.IService:
    from twisted.internet import reactor

    return ClaudewsService(options.settings, reactor)
