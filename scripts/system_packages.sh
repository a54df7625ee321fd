#!/usr/bin/env bash
# Debian packages the test suite's real peers need (softphone, SIP tester, RTP sender, browser, CJK font).
# Installed only when missing and only when we may (root); otherwise those tests skip with a reason.
set -uo pipefail
need=()
command -v baresip  >/dev/null || need+=(baresip-core)
command -v sipp     >/dev/null || need+=(sip-tester)
command -v ffmpeg   >/dev/null || need+=(ffmpeg)
command -v chromium >/dev/null || need+=(chromium)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox      >/dev/null || need+=(sox)
# a real PostgreSQL server for the store tests (started by the suite itself; tests/pg_support.py)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || need+=(postgresql)
# A font covering Chinese, so Mandarin transcripts in the dashboard and reports are not empty boxes.
{ fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; } || dpkg -s fonts-noto-cjk >/dev/null 2>&1 || need+=(fonts-noto-cjk)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing system packages: ${need[*]}" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "missing system packages (tests that need them will skip): ${need[*]}" >&2
    fi
fi
