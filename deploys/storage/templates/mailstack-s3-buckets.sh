#!/bin/sh
# Installed by mailstack: create the buckets listed in the file given that SeaweedFS does not
# have yet (never deletes one), through the master given (127.0.0.1:9333 by default). A line
# "NAME locked" makes the bucket with object lock (and versioning), which SeaweedFS can only
# turn on when it makes the bucket. Run by the deploy when the list changes. It waits up to
# WAIT seconds (120) for the master to answer, then fails.
set -eu
master=${2:-127.0.0.1:9333}
limit=${WAIT:-120}
# weed shell waits for ever on a master that has no leader yet: every call has a time limit
shell() { timeout $((limit < 15 ? limit : 15)) weed shell -master="$master"; }
listed() { printf '%s\n' "$2" | grep -q "^ *$1[[:space:]]"; }
deadline=$(($(date +%s) + limit))
until existing=$(echo "s3.bucket.list" | shell 2>/dev/null); do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "mailstack-s3-buckets: SeaweedFS does not answer" >&2; exit 1; }
  sleep 0.2  # a master just started answers within seconds
done
# every missing bucket in one shell, again until all are there: a cluster that has just started
# may list before it can make one, and another run may have made one meanwhile
while :; do
  creates= missing=
  while read -r bucket lock; do
    [ -n "$bucket" ] && ! listed "$bucket" "$existing" || continue
    creates="${creates}s3.bucket.create -name $bucket${lock:+ -withLock}
"
    missing="$missing $bucket"
  done < "$1"
  [ -n "$missing" ] || exit 0
  if [ -n "${tried:-}" ]; then
    [ "$(date +%s)" -lt "$deadline" ] || { echo "mailstack-s3-buckets: cannot create bucket(s)$missing" >&2; exit 1; }
    sleep 0.5
  fi
  printf '%s' "$creates" | shell >/dev/null 2>&1 || true
  existing=$(echo "s3.bucket.list" | shell 2>/dev/null) || existing=
  for bucket in $missing; do
    ! listed "$bucket" "$existing" || echo "created bucket $bucket"
  done
  tried=yes
done
