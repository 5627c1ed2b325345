"""
claudews-client: a terminal client for a claudews server.

It speaks the wire protocol of ``docs/protocol.rst`` over Autobahn's
Twisted WebSocket client and never imports the server's modules.

    cli          arguments, the token, exit statuses, C{main}
    connection   one WebSocket: requests by id, subscriptions resumed with since
    commands     the subcommands' flows
    prompt       the prompt command: send, follow, Ctrl-C cancels
    follow       following a project's events: progress, permissions asked
    render       events to text on a rich console
    tools        one line per tool call, diffs of edits, shortened results
    terminal     reading answers from the terminal inside the reactor
    errors       the errors a user sees, each with its exit status
    once         waiting on things that happen once, and on the first of many
"""
