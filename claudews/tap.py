"""
The twistd plugin's body: command-line options and the service tree.

This is the only module that touches the global reactor.
"""

import os
import secrets
import stat
from typing import Any, Protocol, cast

from twisted.application import service
from twisted.internet import defer, endpoints, error, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from claudews import cmdline, options
from claudews.config import Settings
from claudews.interfaces import ProcessReactor
from claudews.registry import Registry
from claudews.site import make_site
from claudews.websocket import ServerFactory, fanout

Options = cmdline.Options

TOKEN_FILE = "auth_token"

#: Random bytes in a generated token: 256 bits, 43 URL-safe characters.
TOKEN_BYTES = 32

#: A configured or stored token shorter than this is logged as weak: 32
#: random URL-safe characters hold 192 bits.
MIN_TOKEN_CHARS = 32

_log = Logger()

#: Seconds C{claude --version} may take before it is killed.
VERSION_TIMEOUT = 30.0

#: What of C{claude --version}'s output is kept (server.info trims to 200).
_VERSION_BYTES = 4096


def make_data_private(path: str) -> None:
    """
    Create the data directory mode 0700, or make an existing one so.

    It holds the token and every project's history; C{makedirs} leaves the
    mode of a directory that exists alone (a clone's own C{data/}, 0755),
    and creates missing parents 0755 whatever it is told.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        os.chmod(path, 0o700)
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


class Reactor(ProcessReactor, Protocol):
    """
    What the service needs of the reactor: its clock, starting processes,
    and stopping it when it cannot listen.
    """

    def stop(self) -> None:
        """Stop the reactor."""


class _VersionProtocol(protocol.ProcessProtocol):
    """
    C{claude --version}: C{exited} fires once the process is gone; C{ended}
    fires with what it printed (C{None} when it printed nothing or failed)
    and why it ended, once its pipes are closed too (a child it left may
    hold them longer).
    """

    def __init__(self) -> None:
        self.output = b""
        self.exited: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[tuple[str | None, Failure]] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        if len(self.output) < _VERSION_BYTES:
            self.output += data[: _VERSION_BYTES - len(self.output)]

    def errReceived(self, data: bytes) -> None:
        # Read and dropped: a chatty CLI must never block on a full pipe.
        pass

    def processExited(self, reason: Failure) -> None:
        self.exited.callback(None)

    def processEnded(self, reason: Failure) -> None:
        version = None
        if isinstance(reason.value, error.ProcessDone):
            version = self.output.decode("utf-8", "replace").strip()[:200] or None
        self.ended.callback((version, reason))


class VersionProbe:
    """
    Asks C{claude --version} once, killing it after L{VERSION_TIMEOUT}: a
    hung CLI must neither delay anything nor outlive the server.

    @ivar version: what it said; C{None} until it has answered, or when it
        could not.
    """

    _log = Logger()

    def __init__(self, reactor: Reactor, claude_bin: str) -> None:
        self._reactor = reactor
        self._bin = claude_bin
        self._process: _VersionProtocol | None = None
        self.version: str | None = None

    def start(self) -> None:
        process = _VersionProtocol()
        try:
            self._reactor.spawnProcess(
                process, self._bin, [self._bin, "--version"], env=dict(os.environ)
            )
        except OSError as e:
            self._log.warn("Could not run {bin} --version: {error}", bin=self._bin, error=e)
            return
        self._process = process
        timeout = self._reactor.callLater(VERSION_TIMEOUT, self._too_slow)

        def ended(result: tuple[str | None, Failure]) -> None:
            if timeout.active():
                timeout.cancel()
                self._ended(*result)
            # Otherwise _too_slow said so already.

        process.ended.addCallback(ended).addErrback(
            lambda f: self._log.failure("Asking the CLI its version failed", f)
        )

    def _ended(self, version: str | None, reason: Failure) -> None:
        if version is None:
            self._log.warn(
                "Could not run {bin} --version: {error}",
                bin=self._bin,
                error=reason.getErrorMessage()
                if isinstance(reason.value, error.ProcessTerminated)
                else "it printed nothing",
            )
            return
        self.version = version
        # Tests (and people) wait for this line to know server.info has it.
        self._log.info("Claude Code CLI: {version}", version=version)

    def _too_slow(self) -> None:
        self._log.warn(
            "{bin} --version did not answer within {timeout} s; killed",
            bin=self._bin,
            timeout=VERSION_TIMEOUT,
        )
        self.stop()

    def stop(self) -> defer.Deferred[None]:
        """
        Kill C{claude --version} if it still runs; fires once it is gone.
        """
        process = self._process
        if process is None or process.exited.called:
            return defer.succeed(None)
        transport: Any = process.transport
        try:
            transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass
        gone: defer.Deferred[None] = defer.Deferred()

        def exited(result: object) -> object:
            gone.callback(None)
            return result

        process.exited.addBoth(exited)
        return gone


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
    """

    _log = Logger()

    def __init__(self, settings: Settings, reactor: Reactor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._reactor = reactor
        self.settings = settings
        make_data_private(settings.data)
        self.token, self._token_is_new = load_token(settings)
        self.registry = Registry(settings, reactor, fanout)
        self.registry.setServiceParent(self)  # type: ignore[no-untyped-call]
        self._version = VersionProbe(reactor, settings.claude_bin)
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
        self._port: Any = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        endpoint = endpoints.serverFromString(  # type: ignore[no-untyped-call]
            self._reactor, self.settings.listen
        )
        d = endpoint.listen(make_site(self.factory))
        d.addCallbacks(self._listening, self._cannot_listen)
        self._version.start()

    def _listening(self, port: Any) -> None:
        self._port = port
        address = port.getHost()
        self.factory.listening_on(
            getattr(address, "host", None), getattr(address, "port", None)
        )
        if getattr(address, "port", None) is None:
            self._log.info(
                "Listening on the UNIX socket {socket}",
                socket=os.fsdecode(address.name),
            )
        self._log_url(_url(self.settings, address), _url(self.settings, address, websocket=False))

    def _log_url(self, url: str, console: str) -> None:
        token = self.token
        if token is not None and len(token) < MIN_TOKEN_CHARS:
            self._log.warn(
                "The token is only {length} characters long and may be guessed;"
                " use at least {least} random ones",
                length=len(token),
                least=MIN_TOKEN_CHARS,
            )
        token_file = os.path.join(self.settings.data, TOKEN_FILE)
        if token is None:
            self._log.warn("Authentication is OFF (--no-auth): anyone who can connect can run commands")
            self._log.info("claudews listening on {url}; console at {console}", url=url, console=console)
        elif self._token_is_new:
            # The one time the token is logged: it was just generated. In
            # the console's URL it goes after "#", which browsers never send.
            self._log.info(
                "claudews listening; connect to {url}?token={token} or open the console at"
                " {console}#token={token} (token stored in {file})",
                url=url,
                console=console,
                token=token,
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
        self._log.failure("Cannot listen on {listen}", failure, listen=self.settings.listen)
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


def makeService(options: Any) -> ClaudewsService:
    from twisted.internet import reactor

    return ClaudewsService(options.settings, cast(Reactor, reactor))
