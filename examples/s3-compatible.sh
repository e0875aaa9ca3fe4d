#!/usr/bin/env bash
# A cryptfs vault in an S3-compatible bucket (AWS, Wasabi, Hetzner, OVH, Scaleway, MinIO...).
#
# The remote can be an inline rclone connection string, so nothing is written to the rclone
# config; keys come from the environment (rclone reads RCLONE_S3_* variables itself).
set -euo pipefail
: "${RCLONE_S3_ACCESS_KEY_ID:?set RCLONE_S3_ACCESS_KEY_ID}"
: "${RCLONE_S3_SECRET_ACCESS_KEY:?set RCLONE_S3_SECRET_ACCESS_KEY}"
ENDPOINT=${ENDPOINT:-https://s3.eu-central-1.example.com}
BUCKET=${BUCKET:-my-encrypted-files}
REMOTE=":s3,provider=Other,endpoint='$ENDPOINT':$BUCKET/vault"
VAULT=${VAULT:-$HOME/.cryptfs/s3-vault}
CRYPTFS=${CRYPTFS:-cryptfs}

[ -f "$VAULT/cryptfs.conf" ] || "$CRYPTFS" init "$VAULT"
"$CRYPTFS" remote set "$VAULT" "$REMOTE"
"$CRYPTFS" sync "$VAULT"          # first upload, with a progress bar
"$CRYPTFS" status "$VAULT"
"$CRYPTFS" audit-remote "$VAULT"  # proof: the bucket holds only ciphertext of this vault
