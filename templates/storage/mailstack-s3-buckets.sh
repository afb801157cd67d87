#!/bin/sh
# Installed by mailstack: create the buckets listed in the file given that SeaweedFS does not
# have yet (never deletes one), through the master given (127.0.0.1:9333 by default). Run by
# the deploy when the list changes.
set -eu
master=${2:-127.0.0.1:9333}
i=0
until echo "s3.bucket.list" | weed shell -master="$master" >/dev/null 2>&1; do
  i=$((i + 1)); [ "$i" -lt 60 ] || { echo "mailstack-s3-buckets: SeaweedFS does not answer" >&2; exit 1; }
  sleep 1
done
existing=$(echo "s3.bucket.list" | weed shell -master="$master" 2>/dev/null)
while read -r bucket; do
  [ -n "$bucket" ] || continue
  if ! printf '%s\n' "$existing" | grep -q "^ *$bucket\b"; then
    # another run may have made it meanwhile: only a bucket still missing afterwards is an error
    if ! echo "s3.bucket.create -name $bucket" | weed shell -master="$master" >/dev/null 2>&1 &&
        ! echo "s3.bucket.list" | weed shell -master="$master" 2>/dev/null | grep -q "^ *$bucket\b"; then
      echo "mailstack-s3-buckets: cannot create bucket $bucket" >&2
      exit 1
    fi
    echo "created bucket $bucket"
  fi
done < "$1"
