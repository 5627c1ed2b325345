"""
The twistd plugin's body: command-line options and the service tree.

This is the only module that touches the global reactor.

Whatever can stop the server from working is found before twistd goes on
(before it daemonizes, writes its pid file or opens its log): a bad
setting, an unusable data directory, another server on it, a port that
cannot be listened on. Each ends the process with one line on standard
error and status 1 (L{StartError}), never with the usage text or a
traceback.
"""

import atexit
import os
import secrets
import stat
import sys
from typing import Any, Mapping, Protocol, cast

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from claudews import cmdline, options
from claudews.config import Settings
from claudews.datalock import DataDirectoryLocked, DataLock
from claudews.interfaces import ProcessReactor
from claudews.logtarget import LogTarget
from claudews.metrics import Metrics
from claudews.registry import Registry
from claudews.site import make_site
from claudews.syncer import Syncer, ThreadsReactor
from claudews.versionprobe import VERSION_TIMEOUT, VersionProbe
from claudews.requests import HANDLERS
from claudews.wsfactory import ServerFactory, counted_fanout

__all__ = ["VERSION_TIMEOUT", "Options", "makeService", "ClaudewsService"]


class StartError(Exception):
    """
    The server cannot start; the message is the one line that says why.
    """


class Options(cmdline.Options):
    """
    twistd's view of L{cmdline.Options}: a bad value ends the process with
    one line. twistd prints its whole usage text before any
    L{usage.UsageError}; that is kept for what it helps with, an unknown
    flag (which getopt reports before L{postOptions} runs) and C{--help}.
    """

    def postOptions(self) -> None:
        try:
            super().postOptions()
        except usage.UsageError as e:
            raise SystemExit("claudews: {}".format(e)) from None

TOKEN_FILE = "auth_token"

#: Random bytes in a generated token: 256 bits, 43 URL-safe characters.
TOKEN_BYTES = 32

#: A configured or stored token shorter than this is logged as weak: 32
#: random URL-safe characters hold 192 bits.
MIN_TOKEN_CHARS = 32

_log = Logger()

#: What a fresh clone's C{data/} holds: examples, no state.
CLONE_FILES = frozenset({"claudews.example.toml", "claudews.service"})


def make_data_private(path: str) -> None:
    """
    Create the data directory mode 0700, or make an existing one so.

    It holds the token and every project's history; C{makedirs} leaves the
    mode of a directory that exists alone (a clone's own C{data/}, 0755),
    and creates missing parents 0755 whatever it is told. Tightening a
    directory that holds only a clone's example files is every first start,
    not news; one that held state while open to others is worth a warning.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        os.chmod(path, 0o700)
        if set(os.listdir(path)) <= CLONE_FILES:
            return
        _log.warn(
            "The data directory {dir} was open to other users (mode {mode});"
            " it is now mode 0700",
            dir=path,
            mode="%04o" % (mode,),
        )


def load_token(settings: Settings) -> tuple[str | None, bool]:
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
    make_data_private(settings.data)
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


def open_data_directory(path: str) -> DataLock:
    """
    Make the data directory private and lock it for this process.

    @raise StartError: it cannot be created or written, or another server
        holds it.
    """
    try:
        make_data_private(path)
        return DataLock.acquire(path)
    except DataDirectoryLocked as e:
        raise StartError(str(e)) from None
    except OSError as e:
        raise StartError(
            "cannot use the data directory {}: {}".format(path, e.strerror or e)
        ) from None


class Reactor(ProcessReactor, ThreadsReactor, Protocol):
    """
    What the service needs of the reactor: its clock, starting processes,
    threads for fsync, and stopping it when it cannot listen.
    """

    def stop(self) -> None:
        """Stop the reactor."""


def _url(settings: Settings, address: Any, websocket: bool = True) -> str:
    """
    The URL clients connect to, for the listening C{address}: the
    WebSocket's, or (C{websocket} false) the console's.
    """
    secure = settings.listen.startswith(("ssl:", "tls:"))
    scheme = ("wss" if secure else "ws") if websocket else ("https" if secure else "http")
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host in (None, "0.0.0.0", "::"):
        shown = "localhost"
    else:
        shown = "[%s]" % (host,) if ":" in host else host
    path = "/ws" if websocket else "/"
    if port is None:
        # A UNIX socket: clients send Host without a port.
        return "%s://%s%s" % (scheme, shown, path)
    return "%s://%s:%s%s" % (scheme, shown, port, path)


class ClaudewsService(service.MultiService):
    """
    Starts the projects, then listens; stops in the order that loses
    nothing: stop accepting, finish the projects (their last events still
    reach connected clients), then close the connections with 1001.

    @ivar failed: whether listening failed after start (an endpoint that
        answers late); the process then ends with status 1.
    """

    _log = Logger()

    def __init__(
        self,
        settings: Settings,
        reactor: Reactor,
        lock: DataLock | None = None,
        show_token: bool = True,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._reactor = reactor
        self.settings = settings
        self._lock = lock
        self._show_token = show_token
        make_data_private(settings.data)
        self.token, self._token_is_new = load_token(settings)
        self.metrics = Metrics(reactor, HANDLERS)
        self.registry = Registry(
            settings, reactor, counted_fanout(self.metrics), self.metrics,
            syncer=Syncer(reactor),
        )
        self.registry.setServiceParent(self)  # type: ignore[no-untyped-call]
        self._version = VersionProbe(reactor, settings.claude_bin, dict(settings.env))
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
            metrics=self.metrics,
        )
        self._port: Any = None
        self._listening_d: defer.Deferred[None] | None = None
        self.failed = False

    def listen(self) -> "defer.Deferred[None]":
        """
        Listen on the configured endpoint, once. The built-in endpoints
        (TCP, TLS, UNIX) answer at once, so that L{makeService} can refuse
        to start on a busy port before twistd goes on.
        """
        if self._listening_d is None:
            endpoint = endpoints.serverFromString(  # type: ignore[no-untyped-call]
                self._reactor, self.settings.listen
            )
            d = endpoint.listen(make_site(self.factory))
            self._listening_d = d.addCallback(self._listening)
        return self._listening_d

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self._lock is not None:
            # twistd has daemonized by now: the pid is the final one.
            self._lock.record_pid()
        if self._listening_d is None:
            self.listen().addErrback(self._cannot_listen)
        elif self._port is not None:
            self._announce()
        self._version.start()

    def _listening(self, port: Any) -> None:
        self._port = port
        address = port.getHost()
        self.factory.listening_on(
            getattr(address, "host", None), getattr(address, "port", None)
        )
        if self.running:
            self._announce()

    def _announce(self) -> None:
        address = self._port.getHost()
        if getattr(address, "port", None) is None:
            self._log.info(
                "Listening on the UNIX socket {socket}",
                socket=os.fsdecode(address.name),
            )
        self._log_url(_url(self.settings, address), _url(self.settings, address, websocket=False))

    def _warn_weak_token(self) -> None:
        token = self.token
        if token is not None and len(token) < MIN_TOKEN_CHARS:
            self._log.warn(
                "The token is only {length} characters long and may be guessed;"
                " use at least {least} random ones",
                length=len(token),
                least=MIN_TOKEN_CHARS,
            )

    def _log_url(self, url: str, console: str) -> None:
        self._warn_weak_token()
        token = self.token
        token_file = os.path.join(self.settings.data, TOKEN_FILE)
        if token is None:
            self._log.warn("Authentication is OFF (--no-auth): anyone who can connect can run commands")
            self._log.info("claudews listening on {url}; console at {console}", url=url, console=console)
        elif self._token_is_new and self._show_token:
            # The one time the token is logged: it was just generated, and
            # the log goes to a terminal, not to a file. In the console's
            # URL it goes after "#", which browsers never send.
            self._log.info(
                "claudews listening; connect to {url}?token={token} or open the console at"
                " {console}#token={token} (token stored in {file})",
                url=url,
                console=console,
                token=token,
                file=token_file,
            )
        elif self._token_is_new:
            self._log.info(
                "claudews listening on {url}; console at {console} (a new token was"
                " generated and stored in {file}; it is not written to log files)",
                url=url,
                console=console,
                file=token_file,
            )
        elif self.settings.token:
            self._log.info(
                "claudews listening on {url}; console at {console} (token from the configuration)",
                url=url,
                console=console,
            )
        else:
            self._log.info(
                "claudews listening on {url}; console at {console} (token in {file})",
                url=url,
                console=console,
                file=token_file,
            )

    def _cannot_listen(self, failure: Failure) -> None:
        self._log.critical(
            "claudews: cannot listen on {listen}: {error}",
            listen=self.settings.listen,
            error=failure.getErrorMessage(),
        )
        self.failed = True
        self._reactor.stop()

    def claude_version(self) -> str | None:
        """
        What C{claude --version} said, asked once at start; C{None} until it
        has answered, or when it could not.
        """
        return self._version.version

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        yield self._version.stop()
        if self._port is not None:
            yield self._port.stopListening()
        yield super().stopService()  # type: ignore[no-untyped-call]
        yield self.factory.close_all()
        if self._lock is not None:
            self._lock.release()


def start(
    settings: Settings, reactor: Reactor, twistd: Mapping[str, Any] | None
) -> ClaudewsService:
    """
    The service, its data directory locked and its port open.

    @param twistd: twistd's own options (where it logs), or C{None}.
    @raise StartError: saying why it cannot start.
    """
    target = LogTarget.of(twistd)
    try:
        target.make_private()
    except OSError as e:
        raise StartError(
            "cannot open the log file {}: {}".format(target.file, e.strerror or e)
        ) from None
    lock = open_data_directory(settings.data)
    try:
        server = ClaudewsService(settings, reactor, lock, show_token=target.shows_token)
        failure = _listen_now(server)
    except BaseException:
        lock.release()
        raise
    if failure is not None:
        lock.release()
        raise StartError(
            "cannot listen on {}: {}".format(settings.listen, failure.getErrorMessage())
        )
    return server


def _listen_now(server: ClaudewsService) -> Failure | None:
    """
    Listen; the failure if that failed at once. An endpoint that answers
    later and fails makes the server stop, the process to end with status 1.
    """
    now: list[Failure] = []
    returned = False

    def failed(failure: Failure) -> None:
        if returned:
            server._cannot_listen(failure)
        else:
            now.append(failure)

    server.listen().addErrback(failed)
    returned = True
    return now[0] if now else None


def _exit_status(server: ClaudewsService) -> None:
    if server.failed:
        # twistd has shut down in order; only the status is left to say.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def makeService(config: Any) -> ClaudewsService:
    from twisted.internet import reactor

    try:
        server = start(
            config.settings, cast(Reactor, reactor), getattr(config, "parent", None)
        )
    except StartError as e:
        raise SystemExit("claudews: {}".format(e)) from None
    atexit.register(_exit_status, server)
    return server
