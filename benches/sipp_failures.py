#!/usr/bin/env python3
"""Why calls failed in SIPp load runs: a short count per reason, for benches/sip_load.sh and
benches/churn.sh.

usage: sipp_failures.py LABEL RUN_DIR...

Each RUN_DIR is one run's folder. What it reads there, when present:
  uac_stat.csv            SIPp UAC -trace_stat: calls created / successful / failed and SIPp's
                          own failure classes (FailedMaxUDPRetrans, FailedUnexpectedMessage...);
  uac.out                 the UAC's final screen: per message, timeouts and unexpected messages;
  *_errors.log            SIPp -trace_err, the UAC's (scenario uac_*) and the UAS's (uas_*):
                          each aborted call with the response or request it got instead;
  holdfast.log            holdfast's log (JSON or human): WARN and ERROR lines by message;
  records.jsonl           holdfast's call records: calls not completed or hung up by holdfast,
                          by outcome, status and hangup reason;
  kamailio.log, rtpengine.log   the reference stack's logs: ERROR/WARNING lines by message.
Addresses, ports, call ids and other numbers are folded so that one kind of failure is one line.
"""
import collections
import csv
import glob
import json
import os
import re
import sys

TOP = 6
STAMP = re.compile(r"\d{4}-\d\d-\d\d\t\d\d:\d\d:\d\d\.\d+\t\d+\.\d+: ")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def fold(text):
    """One kind of message per line: numbers, addresses and ids folded."""
    t = ANSI.sub("", text).strip()
    t = re.sub(r"\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b", "<addr>", t)
    t = re.sub(r"\bhf-[0-9a-f]+\b", "<call>", t)
    t = re.sub(r"\b[0-9a-f]{8,}\b", "<id>", t)
    t = re.sub(r"\[[^\]]*\.c:\d+\]", "", t)  # kamailio's [file.c:line]
    t = re.sub(r"\b\d+\b", "#", t)
    return re.sub(r"\s+", " ", t)[:140]


def stat_last(path):
    rows = list(csv.reader(open(path), delimiter=";"))
    if len(rows) < 2:
        return {}
    h = rows[0]
    last = [r for r in rows[1:] if len(r) >= len(h) - 1][-1]
    return dict(zip(h, last))


def num(d, k):
    try:
        return int(float(d.get(k, "0") or 0))
    except ValueError:
        return 0


def sipp_errors(path, counts):
    """Aborted calls and other events in a SIPp -trace_err file (entries are not newline-separated)."""
    text = open(path, errors="replace").read()
    for entry in STAMP.split(text)[1:]:
        m = re.match(r"Aborting call on unexpected message for Call-I[dD] '[^']*': while expecting '([^']*)'[^,]*, received '([^\r\n']*)", entry)
        if m:
            got = m.group(2)
            st = re.match(r"SIP/2\.0 (\d{3}) ?(.*)", got)
            what = f"{st.group(1)} {st.group(2)}".strip() if st else got.split(" ")[0]
            counts[f"received {what} (expecting {m.group(1)})"] += 1
            continue
        m = re.match(r"Aborting call on (.*?) for (call|Call-I[dD])", entry)
        if m:
            counts[m.group(1)] += 1
            continue
        counts[fold(entry.splitlines()[0] if entry.strip() else entry)] += 1


def screen(path, counts):
    """Per-message timeouts and unexpected messages from the last SIPp screen in `path`."""
    text = open(path, errors="replace").read()
    i = text.rfind("Messages  Retrans   Timeout   Unexpected-Msg")
    if i < 0:
        return
    for line in text[i:].splitlines()[1:]:
        m = re.match(r"\s+(\S+) (-+>|<-+)\s+(?:E-RTD\d\s+)?(\d+)\s+(\d+)\s+(\d+)?\s*(\d+)?", line)
        if not m:
            if line.startswith("---"):
                break
            continue
        msg, arrow = m.group(1), "sent" if m.group(2).endswith(">") else "received"
        t, u = int(m.group(5) or 0), int(m.group(6) or 0)
        if t:
            counts[f"{msg} ({arrow}): {'no answer after retransmissions' if arrow == 'sent' else 'not received in time'}"] += t
        if u:
            counts[f"unexpected message instead of {msg}"] += u


def log_lines(path, counts):
    """WARN/ERROR lines of a holdfast, Kamailio or rtpengine log, by folded message."""
    for line in open(path, errors="replace"):
        line = ANSI.sub("", line.rstrip("\n"))
        if line.startswith("{"):
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if j.get("level") in ("WARN", "ERROR"):
                counts[f"{j['level']} {fold(j.get('message', ''))}"] += 1
            continue
        m = re.search(r"\b(WARN|ERROR|ERR|CRITICAL|CRIT|ALERT|WARNING)\b:?\s*(.*)", line)
        if m:
            msg = m.group(2)
            if m.group(1) in ("WARN", "ERROR"):  # holdfast's human format: target, message, fields
                msg = re.sub(r"^[a-z0-9_:]+:\s", "", msg)
                msg = re.sub(r'(\s+[a-z_]+=("[^"]*"|\S+))+$', "", msg)
            counts[f"{m.group(1)} {fold(msg)}"] += 1


def records(path, counts):
    for line in open(path, errors="replace"):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        hangup = r.get("hangup") or {}
        if r.get("outcome") != "completed" or hangup.get("by") == "holdfast":
            by = ", ended by holdfast" if r.get("outcome") == "completed" else ""
            counts[f"{r.get('outcome')}{by} {r.get('status')}: {fold(hangup.get('reason', ''))}"] += 1


def show(title, counts, out):
    if not counts:
        return
    items = counts.most_common()
    shown = ", ".join(f"{n} × {k}" for k, n in items[:TOP])
    more = f", and {len(items) - TOP} more kinds ({sum(n for _, n in items[TOP:])})" if len(items) > TOP else ""
    out.append(f"  - {title}: {shown}{more}")


def main():
    label, dirs = sys.argv[1], [d for d in sys.argv[2:] if os.path.isdir(d)]
    created = ok = failed = 0
    classes, uac, uac_screen, uas = (collections.Counter() for _ in range(4))
    logs = collections.defaultdict(collections.Counter)
    recs = collections.Counter()
    for d in dirs:
        if os.path.exists(f"{d}/uac_stat.csv"):
            s = stat_last(f"{d}/uac_stat.csv")
            created += num(s, "OutgoingCall(C)")
            ok += num(s, "SuccessfulCall(C)")
            failed += num(s, "FailedCall(C)")
            for k in s:
                if k.startswith("Failed") and k.endswith("(C)") and k != "FailedCall(C)" and num(s, k):
                    classes[k[6:-3]] += num(s, k)
        for f in glob.glob(f"{d}/*_errors.log"):
            sipp_errors(f, uas if os.path.basename(f).startswith("uas") else uac)
        if os.path.exists(f"{d}/uac.out"):
            screen(f"{d}/uac.out", uac_screen)
        for name in ("holdfast.log", "kamailio.log", "rtpengine.log"):
            if os.path.exists(f"{d}/{name}"):
                log_lines(f"{d}/{name}", logs[name])
        if os.path.exists(f"{d}/records.jsonl"):
            records(f"{d}/records.jsonl", recs)
    unfinished = created - ok - failed
    head = f"- {label}: {failed} failed of {created} calls over {len(dirs)} run(s)"
    if unfinished > 0:
        head += f", {unfinished} unfinished when SIPp stopped"
    out = [head]
    show("SIPp UAC, by SIPp's class", classes, out)
    show("SIPp UAC, aborted calls", uac, out)
    show("SIPp UAC, per message", uac_screen, out)
    show("SIPp UAS, aborted calls", uas, out)
    for name, c in logs.items():
        show(name, c, out)
    show("holdfast call records, not completed or ended by holdfast (outcome status: reason)", recs, out)
    if len(out) == 1:
        out.append("  - no failure reported by SIPp or the stack's logs")
    print("\n".join(out))


if __name__ == "__main__":
    main()
