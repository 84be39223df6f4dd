#!/bin/sh
# Records real `git bisect` transcripts on a small repository, one folder per scenario; each
# file is one git command's stdout and stderr. Run from this folder: `sh record.sh`.
# The repository: 10 commits c0..c9 with fixed dates, c6 the culprit (adds BUG to f),
# c3 touches only docs/, c4 "does not build" (tested as skip).
set -eu
here=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t
export GIT_CONFIG_NOSYSTEM=1 HOME=$tmp
cd "$tmp"
git init -q -b main repo
cd repo
mkdir docs
for i in 0 1 2 3 4 5 6 7 8 9; do
    export GIT_AUTHOR_DATE="170000000$i +0000" GIT_COMMITTER_DATE="170000000$i +0000"
    if [ $i = 3 ]; then echo "doc $i" >> docs/readme; else echo "line $i" >> f; fi
    [ $i = 6 ] && echo BUG >> f
    git add -A
    git commit -qm "c$i"
    git tag "c$i"
done
# A step's verdict, as a check would give it: bad once BUG is in, skip at c4.
judge() {
    if [ "$(git rev-parse HEAD)" = "$(git rev-parse c4)" ]; then echo skip
    elif grep -q BUG f; then echo "$1"; else echo "$2"; fi
}
rec() { # rec SCENARIO FILE ARGS...: runs git ARGS, saves its output
    d="$here/$1"; f="$2"; shift 2
    mkdir -p "$d"
    git "$@" > "$d/$f" 2>&1 || true
}
# Marks every step by the commit it tested, as the driver does.
run() { # run SCENARIO OLD NEW
    n=1
    while [ -f "$(git rev-parse --git-dir)/BISECT_START" ]; do
        c=$(git rev-parse HEAD)
        t=$(judge "$3" "$2")
        rec "$1" "$(printf %02d $n)-$t.txt" bisect "$t" "$c"
        grep -q "first $3 commit\|only 'skip'ped\|No testable commit" "$here/$1/$(printf %02d $n)-$t.txt" && break
        n=$((n + 1))
        [ $n -gt 20 ] && { echo "$1: no end after 20 steps" >&2; exit 1; }
    done
    git bisect log > "$here/$1/log.txt"
    git bisect reset >/dev/null 2>&1
}
git tag -l | while read t; do echo "$t $(git rev-parse $t)"; done > "$here/commits.txt"

rec found start.txt bisect start c9 c0
run found good bad

rec reverse start.txt bisect start --term-old=broken --term-new=fixed c9 c0
# Finding a fix: BUG present reads as "fixed" (the new state), as a check inverted would.
run reverse broken fixed

rec paths start.txt bisect start c9 c0 -- f
run paths good bad

# Paths no commit in the range touches after the good one is tested: git gives up.
rec paths_untestable start.txt bisect start c9 c0 -- docs
run paths_untestable good bad

# Only skipped commits left: c4 skipped and c5 good, c6 bad would name c6; make c5 skip too.
rec only_skipped start.txt bisect start c6 c3
git bisect skip "$(git rev-parse c4)" > /dev/null 2>&1 || true
rec only_skipped 01-skip.txt bisect skip c5
rec only_skipped 02-skip.txt bisect skip c4
git bisect log > "$here/only_skipped/log.txt"
git bisect reset >/dev/null 2>&1

# Adjacent endpoints: git names the culprit at start.
rec adjacent start.txt bisect start c6 c5
git bisect reset >/dev/null 2>&1

# A mark for a commit outside the range, and a checkout that moved HEAD mid-bisect.
rec moved start.txt bisect start c9 c0
git checkout -q c1
echo "HEAD $(git rev-parse HEAD)" > "$here/moved/head.txt"
echo "EXPECTED $(git rev-parse BISECT_EXPECTED_REV)" >> "$here/moved/head.txt"
git bisect reset >/dev/null 2>&1
