"""The reference central server (`edge central`): what the boxes report to and what acknowledges their events.

    server.py   the MQTT side: subscribe to every box, store, acknowledge, push signed gallery commands
    acks.py     the ack thread: per box epoch, batched acknowledgements, flags and resend requests
    ledger.py   the ack rule and the regression check (pure)
    store.py    the central's own SQLite copy (events, statuses, gallery results, ledgers, flags)
    cli.py      `edge central ...`, thin over the above

Arrows point one way: cli -> server -> acks -> ledger, and server/acks -> store. Nothing on the box imports this
package; it uses the box's contract (edge.mqtt.contract) and signing (edge.mqtt.signing).
"""
