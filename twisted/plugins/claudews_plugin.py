from twisted.application.service import ServiceMaker

claudews = ServiceMaker(
    "claudews",
    "claudews.tap",
    "Drive the Claude Code CLI remotely over one WebSocket",
    "claudews",
)
