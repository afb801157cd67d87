#!/bin/sh
# Installed by mailstack: create the buckets listed in the file given that SeaweedFS does not
# have yet (never deletes one). Run by the deploy when the list changes.
set -eu
i=0
until echo "s3.bucket.list" | weed shell -master=127.0.0.1:9333 >/dev/null 2>&1; do
  i=$((i + 1)); [ "$i" -lt 60 ] || { echo "mailstack-s3-buckets: SeaweedFS does not answer" >&2; exit 1; }
  sleep 1
done
existing=$(echo "s3.bucket.list" | weed shell -master=127.0.0.1:9333 2>/dev/null)
while read -r bucket; do
  [ -n "$bucket" ] || continue
  if ! printf '%s\n' "$existing" | grep -q "^ *$bucket\b"; then
    echo "s3.bucket.create -name $bucket" | weed shell -master=127.0.0.1:9333 >/dev/null
    echo "created bucket $bucket"
  fi
done < "$1"
