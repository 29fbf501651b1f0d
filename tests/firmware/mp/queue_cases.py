"""What the flash queue promises, case by case (MicroPython and CPython).

Usage: queue_cases.py DIR   (prints "ok NAME" or "FAIL NAME: why" per case; exit 1 if any failed)
tests/firmware/test_flash_queue.py runs this under the 64 KB VM and imports the cases under CPython.
"""
import gc
import os
import sys

from queue_fs import FatFlash, read, record, write

from kerbline.store.queue import MAX_ONE, FlashQueue


def check(ok, why):
    if not ok:
        raise AssertionError(why)


def msg(boot, seq, size=30):
    return bytes(((boot * 7 + seq * 3 + i) & 0xFF) for i in range(size))


def keys(q):
    return [(b, s) for b, s, a, m in q.peek(1000)]


def fresh(folder, max_bytes=2000, fs=None):
    path = folder + "/q.log"
    write(path, None)
    write(path + ".tmp", None)
    return FlashQueue(path, max_bytes, fs), path


def add(q, boot, seqs, alarm=False, size=30):
    for s in seqs:
        q.append(msg(boot, s, size), boot, s, alarm)


def case_order_and_contents_survive_reopen(folder):
    q, path = fresh(folder)
    add(q, 1, (1, 2))
    add(q, 1, (3,), alarm=True)
    add(q, 2, (1,))
    got = q.peek(10)
    check(got == [(1, 1, False, msg(1, 1)), (1, 2, False, msg(1, 2)), (1, 3, True, msg(1, 3)), (2, 1, False, msg(2, 1))], got)
    check(q.peek(2) == got[:2], "peek(2)")
    check(len(q) == 4 and q.bytes_used == len(read(path)), (len(q), q.bytes_used))
    again = FlashQueue(path, 2000)
    check(again.peek(10) == got and len(again) == 4 and again.bytes_used == q.bytes_used, "reopen differs")


def case_cumulative_ack_covers_earlier_boots(folder):
    q, path = fresh(folder)
    add(q, 1, (1, 2, 3))
    add(q, 2, (1, 2))
    check(q.ack(2, 1) == 4, "ack(2,1) acks boot 1 and 2.1")
    check(keys(q) == [(2, 2)], keys(q))
    check(q.ack(1, 99) == 0 and q.ack(2, 1) == 0, "an older or repeated ack changes nothing")
    check(keys(FlashQueue(path, 2000)) == [(2, 2)], "ack not durable")


def case_ack_one_out_of_order(folder):
    q, path = fresh(folder)
    add(q, 1, range(1, 7))
    check(q.ack_one(1, 3) and q.ack_one(1, 5), "acks beyond the oldest")
    check(keys(q) == [(1, 1), (1, 2), (1, 4), (1, 6)], keys(q))
    check(not q.ack_one(1, 3), "second ack of the same report")
    check(not q.ack_one(1, 9) and not q.ack_one(3, 1), "ack of a report not in the queue")
    check(q.ack_one(1, 1) and keys(q) == [(1, 2), (1, 4), (1, 6)], keys(q))
    check(q.ack_one(1, 2) and keys(q) == [(1, 4), (1, 6)], keys(q))
    check(keys(FlashQueue(path, 2000)) == [(1, 4), (1, 6)], "reopen differs")
    check(len(q) == 2, len(q))


def case_ack_one_beyond_limit_is_refused_and_counted(folder):
    q, path = fresh(folder, 4000)
    add(q, 1, range(1, MAX_ONE + 4))
    for s in range(3, MAX_ONE + 3):
        check(q.ack_one(1, s), "ack_one %d" % s)
    check(not q.ack_one(1, MAX_ONE + 3) and q.ack_overflow == 1, "over the limit")
    check(keys(q) == [(1, 1), (1, 2), (1, MAX_ONE + 3)], keys(q))
    check(q.ack_one(1, 1) and q.ack_one(1, 2), "the oldest")
    check(keys(q) == [(1, MAX_ONE + 3)] and q.ack_one(1, MAX_ONE + 3), "room again after the watermark moved")
    check(len(q) == 0 and read(path) is None, "acked")


def case_acking_everything_removes_the_log(folder):
    q, path = fresh(folder)
    add(q, 1, (1, 2, 3))
    q.ack(1, 3)
    check(len(q) == 0 and q.bytes_used == 0 and read(path) is None, "log left behind")
    add(q, 1, (4,))
    check(keys(FlashQueue(path, 2000)) == [(1, 4)], "append after emptying")
    q.ack(9, 1)
    check(read(path) is None and q.peek(5) == [], "ack beyond everything")


def case_full_drops_oldest_routine_and_keeps_alarms(folder):
    limit = 600
    q, path = fresh(folder, limit)
    routine = []
    alarms = []
    drops_seen = []
    for s in range(1, 60):
        alarm = s % 5 == 0
        before = q.dropped_routine
        q.append(msg(1, s), 1, s, alarm)
        (alarms if alarm else routine).append(s)
        check(q.bytes_used <= limit and q.bytes_used == len(read(path)), "over the bound at %d" % s)
        if q.dropped_routine > before:
            drops_seen.append(q.dropped_routine - before)
    check(q.dropped_alarm == 0 and q.dropped_routine > 0, (q.dropped_alarm, q.dropped_routine))
    kept = keys(q)
    kept_alarms = [s for b, s in kept if s in alarms]
    kept_routine = [s for b, s in kept if s not in alarms]
    check(kept_alarms == alarms, "an alarm was dropped")
    check(kept_routine == routine[len(routine) - len(kept_routine):], "not the oldest routine reports went")
    check(len(kept_routine) + q.dropped_routine == len(routine), "routine reports unaccounted for")
    # each drop frees an eighth of the queue beyond the need, so drops come in groups, not one per append
    check(max(drops_seen) >= 2 and len(drops_seen) < q.dropped_routine, drops_seen)


def case_alarms_only_drops_the_oldest_alarm(folder):
    limit = 500
    q, path = fresh(folder, limit)
    for s in range(1, 30):
        q.append(msg(1, s), 1, s, True)
        check(q.bytes_used <= limit, "over the bound")
    kept = [s for b, s in keys(q)]
    check(q.dropped_alarm > 0 and q.dropped_routine == 0, q.dropped_alarm)
    check(kept == list(range(30 - len(kept), 30)), "not the oldest alarms went: %r" % kept)
    check(len(kept) + q.dropped_alarm == 29, "alarms unaccounted for")
    # just enough room is made for an alarm: the queue stays nearly full
    check(q.bytes_used + 44 > limit, q.bytes_used)


def case_no_room_for_an_ack_record_compacts_instead(folder):
    limit = 44 * 5 + 10
    q, path = fresh(folder, limit)
    add(q, 1, range(1, 6))
    check(q.bytes_used == 220, q.bytes_used)
    check(q.ack_one(1, 2), "ack_one")  # 14 bytes: fits (234 > 230? no room) -> compaction
    check(keys(q) == [(1, 1), (1, 3), (1, 4), (1, 5)] and q.bytes_used == 176, (keys(q), q.bytes_used))
    check(keys(FlashQueue(path, limit)) == [(1, 1), (1, 3), (1, 4), (1, 5)], "ack not durable")


def case_refuses_what_cannot_fit(folder):
    q, path = fresh(folder, 200)
    for size in (0, 187, 1025):
        try:
            q.append(bytes(size), 1, 1, False)
            check(False, "size %d accepted" % size)
        except ValueError:
            pass
    q.append(bytes(186), 1, 1, False)
    check(len(q) == 1, "a record of exactly max_bytes")


def case_torn_tail_is_dropped_and_the_rest_kept(folder):
    q, path = fresh(folder)
    add(q, 1, (1, 2, 3))
    whole = read(path)
    torn = record(0, 1, 4, msg(1, 4))
    for cut in (1, 13, 14, 20, len(torn) - 1):
        write(path, whole + torn[:cut])
        again = FlashQueue(path, 2000)
        check(keys(again) == [(1, 1), (1, 2), (1, 3)] and again.torn == 1, (cut, keys(again), again.torn))
        check(read(path) == whole, "torn bytes still on flash (cut %d)" % cut)
        check(FlashQueue(path, 2000).torn == 0, "recovery not durable")


def case_last_record_with_bad_crc_is_torn(folder):
    q, path = fresh(folder)
    add(q, 1, (1, 2))
    data = bytearray(read(path))
    data[-1] ^= 0x01
    write(path, bytes(data))
    again = FlashQueue(path, 2000)
    check(keys(again) == [(1, 1)] and again.torn == 1, keys(again))


def case_damage_in_the_middle_skips_only_that_record(folder):
    q, path = fresh(folder)
    add(q, 1, (1, 2, 3, 4))
    data = bytearray(read(path))
    data[44] = 0x00  # the magic byte of the second record (each record is 14 + 30 bytes)
    write(path, bytes(data))
    again = FlashQueue(path, 2000)
    check(keys(again) == [(1, 1), (1, 3), (1, 4)] and again.torn == 1, keys(again))
    check(again.peek(5)[1][3] == msg(1, 3), "the record after the damage is intact")
    check(FlashQueue(path, 2000).torn == 0, "damage still on flash")


def case_interrupted_compaction_leftover_is_discarded(folder):
    q, path = fresh(folder)
    add(q, 1, (1, 2))
    write(path + ".tmp", record(0, 1, 1, msg(1, 1))[:20])
    again = FlashQueue(path, 2000)
    check(keys(again) == [(1, 1), (1, 2)] and read(path + ".tmp") is None, keys(again))


def case_compaction_finished_when_only_the_new_log_exists(folder):
    # a file system whose rename does not replace: the old log was removed, the rename did not happen
    q, path = fresh(folder)
    add(q, 1, (1, 2))
    os.rename(path, path + ".tmp")
    again = FlashQueue(path, 2000)
    check(keys(again) == [(1, 1), (1, 2)] and read(path + ".tmp") is None and read(path) is not None, "not finished")


def case_works_where_rename_does_not_replace(folder):
    q, path = fresh(folder, 300, FatFlash())
    for s in range(1, 20):
        q.append(msg(1, s), 1, s, s == 1)
    check(q.dropped_routine > 0 and keys(q)[0] == (1, 1), keys(q))
    check(keys(FlashQueue(path, 300)) == keys(q) and read(path + ".tmp") is None, "FAT compaction")


CASES = (
    case_order_and_contents_survive_reopen,
    case_cumulative_ack_covers_earlier_boots,
    case_ack_one_out_of_order,
    case_ack_one_beyond_limit_is_refused_and_counted,
    case_acking_everything_removes_the_log,
    case_full_drops_oldest_routine_and_keeps_alarms,
    case_alarms_only_drops_the_oldest_alarm,
    case_no_room_for_an_ack_record_compacts_instead,
    case_refuses_what_cannot_fit,
    case_torn_tail_is_dropped_and_the_rest_kept,
    case_last_record_with_bad_crc_is_torn,
    case_damage_in_the_middle_skips_only_that_record,
    case_interrupted_compaction_leftover_is_discarded,
    case_compaction_finished_when_only_the_new_log_exists,
    case_works_where_rename_does_not_replace,
)


def main(folder):
    failed = 0
    for case in CASES:
        try:
            case(folder)
            print("ok " + case.__name__)
        except Exception as e:  # a crash is that case's failure, reported, not a dead run
            failed += 1
            print("FAIL %s: %s %r" % (case.__name__, type(e).__name__, e.args))
        gc.collect()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1])
