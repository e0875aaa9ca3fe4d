#!/usr/bin/env bash
# A cryptfs vault synced to Nextcloud (or any WebDAV server) — a walkthrough.
#
# 1. Tell rclone about the server once (stored in your rclone config, ~/.config/rclone):
#      rclone config create nextcloud webdav url=https://cloud.example.org/remote.php/dav/files/USER \
#          vendor=nextcloud user=USER pass="$(rclone obscure 'APP-PASSWORD')"
#    (.venv/bin/rclone is the rclone that `make install` brought, if none is installed.)
# 2. Run this script: it creates a vault, points it at nextcloud:cryptfs-vault, mounts it.
set -euo pipefail
VAULT=${VAULT:-$HOME/.cryptfs/nextcloud-vault}
MNT=${MNT:-$HOME/Private}
REMOTE=${REMOTE:-nextcloud:cryptfs-vault}
CRYPTFS=${CRYPTFS:-cryptfs}

[ -f "$VAULT/cryptfs.conf" ] || "$CRYPTFS" init "$VAULT" --remote "$REMOTE"
mkdir -p "$MNT"
"$CRYPTFS" mount "$VAULT" "$MNT" --remote "$REMOTE"
echo "Work in $MNT; changes reach $REMOTE a few seconds after you save."
echo "When done: $CRYPTFS unmount $MNT    (uploads what is pending first)"
echo "On another machine: $CRYPTFS clone $REMOTE ~/.cryptfs/nextcloud-vault"
