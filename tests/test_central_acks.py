"""The reference central's acknowledgements: the ack rule per box epoch (pure), batched acks, epochs, seq
regressions and asking a box to send again what the central lost; against a real mosquitto with a fake box."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import List

from click.testing import CliRunner

from edge.central.acks import ACK_INTERVAL_S
from edge.central.cli import central as central_cli
from edge.central.ledger import ACK_MAX_SEQS, RESEND_MAX_S, RESEND_MIN_S, AckLedger, Coverage, Marks, ResendPacer
from edge.central.store import CentralStore
from edge.mqtt.contract import encode, validate
from tests.central_box import DEVICE, EPOCH, OTHER_EPOCH, SITE, FakeBox, ack, event, open_central, stats
from tests.support import Mosquitto, wait_until


# the ack rule, pure ---------------------------------------------------------------------------------------------------
def test_coverage_merges_touching_ranges_and_finds_the_run_after_a_seq() -> None:
    covered = Coverage()
    for lo, hi in [(5, 5), (1, 2), (9, 12), (3, 3), (7, 7)]:
        covered.add(lo, hi)
    assert covered.run_end(0) == 3 and len(covered) == 4
    covered.add(4, 4)
    assert covered.run_end(0) == 5 and covered.run_end(6) == 7 and covered.run_end(8) == 12
    covered.add(6, 8)
    assert covered.run_end(0) == 12 and len(covered) == 1 and covered.run_end(12) == 12


def test_ack_ledger_acks_the_contiguous_prefix_and_lists_the_rest() -> None:
    ledger = AckLedger()
    ledger.add(1, None)
    ledger.add(2, 1)
    ledger.add(4, 3)
    assert ledger.ack(EPOCH) == ack(2, [4])
    ledger.add(3, 2)
    assert ledger.ack(EPOCH) == ack(4)
    ledger.add(7, 5)  # seq 6 was never used by the box: prev_seq jumps over it
    assert ledger.ack(EPOCH) == ack(4, [7])
    ledger.add(5, 4)
    assert ledger.ack(EPOCH) == ack(7)
    validate("edge.ack/1", ledger.ack(EPOCH))


def test_an_epoch_that_starts_above_seq_1_is_acknowledged_from_its_first_event() -> None:
    ledger = AckLedger()  # the box started this epoch at seq 501: its first event has prev_seq null
    ledger.add(502, 501)
    assert ledger.ack(EPOCH) == ack(0, [502])
    ledger.add(501, None)
    assert ledger.ack(EPOCH) == ack(502) and ledger.stored_up_to == 502


def test_a_late_central_acks_by_list_until_the_box_reports_its_floor() -> None:
    ledger = AckLedger()
    ledger.add(15, 14)  # a live event arrives before the box's older unacknowledged backlog
    assert ledger.ack(EPOCH) == ack(0, [15])
    ledger.raise_floor(12)  # stats: outbox.acked_up_to = 12 (a previous central stored 1..12)
    ledger.add(13, 12)
    assert ledger.ack(EPOCH) == ack(13, [15])
    ledger.add(14, 13)
    assert ledger.ack(EPOCH) == ack(15)
    assert ledger.stored_up_to == 0, "1..12 are done on the box but not stored here"
    assert ledger.marks() == Marks(floor=12, acked_up_to=15, stored_up_to=0)


def test_the_ack_list_is_capped_and_names_the_seqs_received_since_the_last_ack_first() -> None:
    ledger = AckLedger()
    for seq in range(10, 10 + 2 * ACK_MAX_SEQS):
        ledger.add(seq, seq - 1)
    for seq in (5, 3):
        ledger.add(seq, seq - 1)
    capped = ledger.ack(EPOCH, recent=[5, 3])
    validate("edge.ack/1", capped)
    assert capped["up_to_seq"] == 0 and len(capped["seqs"]) == ACK_MAX_SEQS and {3, 5} <= set(capped["seqs"])
    assert max(capped["seqs"]) == 9 + 2 * ACK_MAX_SEQS


def test_a_ledger_comes_back_from_its_marks_and_the_events_above_them() -> None:
    ledger = AckLedger(Marks(floor=10, acked_up_to=12, stored_up_to=8))
    assert (ledger.up_to, ledger.stored_up_to) == (12, 8)
    for seq in (9, 10, 14):
        ledger.add(seq, seq - 1)
    assert ledger.ack(EPOCH) == ack(12, [14]) and ledger.stored_up_to == 10


def test_stats_whose_last_seq_went_below_what_the_box_had_sent_before_are_a_regression() -> None:
    ledger = AckLedger()
    for seq in range(1, 6):
        ledger.add(seq, seq - 1 or None)
    # stats made before events 4 and 5 went out may arrive after them: not a regression
    assert ledger.check_stats(last_seq=3) is None
    assert ledger.check_stats(last_seq=5) is None
    ledger.add(6, 5)
    assert ledger.check_stats(last_seq=6) is None
    for seq in (7, 8):
        ledger.add(seq, seq - 1)
    # a box that cannot read its database repeats its last figures: a repeat is no regression
    assert ledger.check_stats(last_seq=6) is None and ledger.check_stats(last_seq=6) is None
    assert "last seq is 7, below seq 8 it had sent before" in (ledger.check_stats(last_seq=7) or "")

    ledger = AckLedger()
    assert ledger.check_stats(last_seq=10) is None
    assert "last seq is 4, below the 10 it reported before" in (ledger.check_stats(last_seq=4) or "")
    assert AckLedger(ledger.marks()).reported == 10, "kept across restarts"


def test_resends_are_asked_once_a_minute_then_less_often_while_nothing_comes() -> None:
    pacer = ResendPacer()
    assert pacer.due(0.0, stored_up_to=0)
    assert not pacer.due(30.0, 0) and not pacer.due(RESEND_MIN_S + 1, 0), "nothing came: wait twice as long"
    assert pacer.due(2 * RESEND_MIN_S + 1, 0)
    assert not pacer.due(5 * RESEND_MIN_S, 0) and pacer.due(6 * RESEND_MIN_S + 2, 0)
    assert not pacer.due(6 * RESEND_MIN_S + 3, 500) and pacer.due(7 * RESEND_MIN_S + 2, 500), "progress: a minute"
    now = 8 * RESEND_MIN_S
    for _ in range(20):
        now += RESEND_MAX_S
        assert pacer.due(now, 500)
    assert pacer.wait == RESEND_MAX_S


# against a real broker ------------------------------------------------------------------------------------------------


def test_a_burst_of_events_is_acknowledged_in_a_few_batched_acks(broker: Mosquitto, tmp_path: Path) -> None:
    box = FakeBox(broker.port)
    central = open_central(broker, tmp_path / "central.db")
    try:
        start = time.monotonic()
        for seq in range(1, 301):
            box.client.publish(box.topics.events, encode(event(seq, seq - 1 or None)), qos=1)
        assert wait_until(lambda: box.last_ack() == ack(300), 30), box.acks[-3:]
        elapsed = time.monotonic() - start
        assert central.counts()["events"] == 300
        assert box.ack_count() <= elapsed / ACK_INTERVAL_S + 2, f"{box.ack_count()} acks in {elapsed:.2f} s"
    finally:
        central.close()
        box.close()


def test_a_new_epoch_is_flagged_and_acknowledged_on_its_own(broker: Mosquitto, tmp_path: Path) -> None:
    box = FakeBox(broker.port)
    lines: List[str] = []
    central = open_central(broker, tmp_path / "central.db", on_notice=lambda n: lines.append(n.line))
    try:
        for seq in (1, 2, 3):
            box.send(box.topics.events, event(seq, seq - 1 or None))
        assert wait_until(lambda: box.last_ack() == ack(3), 20), box.acks
        # the box's database was started again: seqs begin at 1 in a new epoch, with new event ids
        for seq in (1, 2):
            box.send(box.topics.events, event(seq, seq - 1 or None, epoch=OTHER_EPOCH, person_id="t9"))
        assert wait_until(lambda: box.last_ack(OTHER_EPOCH) == ack(2, epoch=OTHER_EPOCH), 20), box.acks
        assert box.last_ack() == ack(3), "the old epoch's ack did not move"
        assert central.counts()["new_epoch"] == 1 and central.counts().get("conflicts", 0) == 0
        [flag] = central.flags()
        assert (flag["kind"], flag["epoch"], flag["device_id"]) == ("new_epoch", OTHER_EPOCH, DEVICE)
        assert any(line.startswith(f"flag      {SITE}/{DEVICE} new_epoch: new epoch {OTHER_EPOCH}") for line in lines)
        assert len(central.events(DEVICE)) == 5
    finally:
        central.close()
        box.close()
    out = CliRunner().invoke(central_cli, ["flags", "--db", str(tmp_path / "central.db")])
    assert out.exit_code == 0 and f"{SITE}/{DEVICE} epoch {OTHER_EPOCH} new_epoch: new epoch" in out.output
    central = open_central(broker, tmp_path / "central.db")  # known epochs are not flagged again after a restart
    box = FakeBox(broker.port)
    try:
        box.send(box.topics.events, event(4, 3))
        box.send(box.topics.events, event(3, 2, epoch=OTHER_EPOCH))
        assert wait_until(lambda: box.last_ack(OTHER_EPOCH) == ack(3, epoch=OTHER_EPOCH), 20), box.acks
        assert wait_until(lambda: box.last_ack() == ack(4), 20), box.acks
        assert central.counts().get("new_epoch", 0) == 0 and len(central.flags()) == 1
    finally:
        central.close()
        box.close()


def test_seqs_that_go_back_within_an_epoch_are_flagged_and_never_acknowledged(
    broker: Mosquitto, tmp_path: Path
) -> None:
    box = FakeBox(broker.port)
    central = open_central(broker, tmp_path / "central.db")
    try:
        for seq in range(1, 6):
            box.send(box.topics.events, event(seq, seq - 1 or None))
        box.send(box.topics.stats, stats(acked_up_to=0, last_seq=5))
        assert wait_until(lambda: box.last_ack() == ack(5), 20), box.acks
        # the box lost rows without noticing: it reports last_seq 2 and reuses 3.. for new events
        box.send(box.topics.stats, stats(acked_up_to=0, last_seq=2))
        assert wait_until(lambda: central.counts().get("regression") == 1, 20)
        acks = box.ack_count()
        box.send(box.topics.events, event(3, 2, person_id="t3"))  # new facts under an old id: kept out
        box.send(box.topics.events, event(6, 5))  # "up to 6" would also confirm the new 3, never stored here
        assert wait_until(lambda: central.counts().get("events") == 6, 20)
        time.sleep(3 * ACK_INTERVAL_S)
        assert box.ack_count() == acks, box.acks[acks:]
        [flag] = central.flags()
        assert flag["kind"] == "regression" and "last seq is 2, below the 5 it reported" in flag["detail"]
    finally:
        central.close()
        box.close()
    central = open_central(broker, tmp_path / "central.db")  # the halt is kept across a restart
    box = FakeBox(broker.port)
    try:
        box.send(box.topics.events, event(7, 6))
        assert wait_until(lambda: central.counts().get("events") == 1, 20)
        time.sleep(3 * ACK_INTERVAL_S)
        assert box.ack_count() == 0
    finally:
        central.close()
        box.close()


def test_an_event_id_arriving_with_other_facts_halts_its_epoch(broker: Mosquitto, tmp_path: Path) -> None:
    box = FakeBox(broker.port)
    central = open_central(broker, tmp_path / "central.db")
    try:
        for seq in range(1, 5):
            box.send(box.topics.events, event(seq, seq - 1 or None))
        assert wait_until(lambda: box.last_ack() == ack(4), 20), box.acks
        box.send(box.topics.events, event(4, 3, type="exit"))
        assert wait_until(lambda: central.counts().get("regression") == 1, 20)
        acks = box.ack_count()
        box.send(box.topics.events, event(5, 4))
        assert wait_until(lambda: central.counts().get("events") == 5, 20)
        time.sleep(3 * ACK_INTERVAL_S)
        assert box.ack_count() == acks and central.events(DEVICE)[3]["payload"]["type"] == "entry"
    finally:
        central.close()
        box.close()


def test_a_central_that_lost_its_copy_asks_the_box_again_at_most_once_a_minute(
    broker: Mosquitto, tmp_path: Path
) -> None:
    box = FakeBox(broker.port)
    central = open_central(broker, tmp_path / "new-central.db")  # the old central.db is gone
    try:
        box.send(box.topics.stats, stats(acked_up_to=10, last_seq=12))
        assert wait_until(lambda: box.ack_count() == 2, 20)
        assert box.acks == [ack(10), ack(0, resend_from=1)]
        box.send(box.topics.stats, stats(acked_up_to=10, last_seq=12))
        assert wait_until(lambda: central.counts().get("stats") == 2, 20)
        for seq in range(1, 13):  # what the box sends again, and its two unacknowledged ones
            box.send(box.topics.events, event(seq, seq - 1 or None, historical=True))
        assert wait_until(lambda: box.last_ack() == ack(12), 20), box.acks
        assert not any("resend_from" in a for a in box.acks[2:]), "one request a minute at most"
        assert central.counts()["resend"] == 1 and central.flags()[0]["kind"] == "resend"
    finally:
        central.close()
        box.close()


def test_a_running_central_asks_again_by_hand_and_ignores_stats_before_the_box_read_its_database(
    broker: Mosquitto, tmp_path: Path
) -> None:
    box = FakeBox(broker.port)
    central = open_central(broker, tmp_path / "central.db")
    try:
        box.send(box.topics.events, event(1, None))
        assert wait_until(lambda: box.last_ack() == ack(1), 20)
        box.send(box.topics.stats, stats(acked_up_to=0, last_seq=0, epoch="0" * 16))  # edge.mqtt.link.NO_EPOCH
        assert central.request_resend(SITE, DEVICE, 1) == EPOCH
        central.request_resend(SITE, DEVICE, 3, epoch=OTHER_EPOCH)  # an epoch this central never saw
        assert wait_until(lambda: box.ack_count() == 4, 20), box.acks
        assert ack(0, resend_from=1) in box.acks and ack(0, epoch=OTHER_EPOCH, resend_from=3) in box.acks
        assert central.counts()["stats"] == 1 and central.flags() == []
        box.send(box.topics.events, event(2, 1))
        assert wait_until(lambda: box.last_ack() == ack(2), 20)
    finally:
        central.close()
        box.close()


def test_cli_resend_asks_a_box_for_its_events_from_a_seq(broker: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "central.db"
    box = FakeBox(broker.port)
    central = open_central(broker, db)
    try:
        box.send(box.topics.events, event(1, None, epoch=OTHER_EPOCH))
        assert wait_until(lambda: box.ack_count() == 1, 20)
    finally:
        central.close()
    try:
        base = ["resend", "--host", "127.0.0.1", "--port", str(broker.port), "--site", SITE, "--device", DEVICE]
        out = CliRunner().invoke(central_cli, [*base, "--from", "40", "--db", str(db)])
        assert out.exit_code == 0, out.output
        assert wait_until(lambda: box.ack_count() == 2, 20)
        assert box.acks[1] == ack(0, epoch=OTHER_EPOCH, resend_from=40)
        out = CliRunner().invoke(central_cli, [*base, "--from", "7", "--epoch", EPOCH])
        assert out.exit_code == 0, out.output
        assert wait_until(lambda: box.ack_count() == 3, 20)
        assert box.acks[2] == ack(0, resend_from=7)
        CentralStore(tmp_path / "other.db").close()
        out = CliRunner().invoke(central_cli, [*base, "--from", "7", "--db", str(tmp_path / "other.db")])
        assert out.exit_code != 0 and "no epoch known for school-1/box-17" in out.output
    finally:
        box.close()


def test_a_central_that_lost_its_database_gets_every_event_back_from_a_real_box(
    broker: Mosquitto, tmp_path: Path
) -> None:
    from test_mqtt_daemon import DEVICE as BOX
    from test_mqtt_daemon import SITE as BOX_SITE
    from test_mqtt_daemon import Daemon, inject, write_config

    from edge.central.server import Central
    from edge.store import EventStore
    from tests.support import stored_events

    db = tmp_path / "box.db"
    EventStore(db, BOX).close()
    inject(db, 10, threading.Event(), 0.0)  # 30 events
    daemon = Daemon(write_config(tmp_path, db, broker.port), tmp_path / "edge.log").start()
    first = Central("127.0.0.1", broker.port, tmp_path / "central.db")
    first.start()
    try:
        assert wait_until(lambda: all(e["acked_at"] for e in stored_events(db)), 60, 0.2), daemon.text()[-2000:]
        assert len(first.events(BOX)) == 30
        first.close()
        (tmp_path / "central.db").unlink()  # the central's copy is gone (its session in the broker too)
        second = Central("127.0.0.1", broker.port, tmp_path / "central-new.db", client_id="central-new")
        second.start()
        try:
            box_ids = {e["event_id"] for e in stored_events(db)}
            assert wait_until(lambda: {e["event_id"] for e in second.events(BOX)} == box_ids, 60, 0.2), (
                f"{second.counts()}\n{daemon.text()[-2000:]}"
            )
            assert wait_until(lambda: all(e["acked_at"] for e in stored_events(db)), 30, 0.2)
            assert [f["kind"] for f in second.flags()] == ["resend"]
            assert second.flags()[0]["device_id"] == BOX and second.flags()[0]["site"] == BOX_SITE
        finally:
            second.close()
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        first.close()
    assert "Traceback" not in daemon.text()
