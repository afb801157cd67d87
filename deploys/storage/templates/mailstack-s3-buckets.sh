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
deadline=$(($(date +%s) + limit))
until echo "s3.bucket.list" | shell >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "mailstack-s3-buckets: SeaweedFS does not answer" >&2; exit 1; }
  sleep 1
done
existing=$(echo "s3.bucket.list" | shell 2>/dev/null)
while read -r bucket lock; do
  [ -n "$bucket" ] || continue
  if ! printf '%s\n' "$existing" | grep -q "^ *$bucket[[:space:]]"; then
    # another run may have made it meanwhile: only a bucket still missing afterwards is an error
    if ! echo "s3.bucket.create -name $bucket${lock:+ -withLock}" | shell >/dev/null 2>&1 &&
        ! echo "s3.bucket.list" | shell 2>/dev/null | grep -q "^ *$bucket[[:space:]]"; then
      echo "mailstack-s3-buckets: cannot create bucket $bucket" >&2
      exit 1
    fi
    echo "created bucket $bucket${lock:+ (object lock)}"
  fi
done < "$1"
