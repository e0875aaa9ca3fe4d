#!/usr/bin/env bash
# The cryptfs demo: make a vault under ./demo/, mount it with a "cloud" remote (a local
# folder ./demo/cloud used through rclone's local backend), put files in, show the
# plaintext view beside the encrypted backing directory and what the cloud holds, unmount
# (which uploads what is pending), restore the vault from the cloud with `cryptfs clone`
# and read a file back. No prompts; safe to run again (it starts from scratch and never
# leaves a mount behind).
set -euo pipefail
cd "$(dirname "$0")/.."
CRYPTFS="${CRYPTFS:-$PWD/.venv/bin/cryptfs}"
DEMO="${DEMO_DIR:-$PWD/demo}"
VAULT="$DEMO/vault"
MNT="$DEMO/mnt"
CLOUD="$DEMO/cloud"
RESTORED="$DEMO/restored"
export CRYPTFS_PASSWORD="demo passphrase - not for real data"
# Keep the demo's local settings and sync state inside ./demo too.
export XDG_CONFIG_HOME="$DEMO/.config"

cleanup() {
  if grep -qs " $MNT fuse" /proc/mounts; then
    "$CRYPTFS" unmount "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT" 2>/dev/null || true
  fi
}
trap cleanup EXIT
cleanup
rm -rf "$DEMO"
mkdir -p "$MNT" "$CLOUD"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "cryptfs init $VAULT"
"$CRYPTFS" init "$VAULT"

step "cryptfs mount $VAULT $MNT --remote $CLOUD"
"$CRYPTFS" mount "$VAULT" "$MNT" --remote "$CLOUD" --sync-interval 1 --log "$DEMO/mount.log"

step "Copy example files into the mount (a normal folder for every program)"
mkdir -p "$MNT/Documents/Taxes 2026" "$MNT/Photos"
cp README.md "$MNT/Documents/"
printf 'Account: DE89 3704 0044 0532 0130 00\nPIN: 4711\n' > "$MNT/Documents/Taxes 2026/bank.txt"
head -c 300000 /dev/urandom > "$MNT/Photos/holiday.jpg"
ln -s "Documents/Taxes 2026/bank.txt" "$MNT/bank-link"
(cd "$MNT" && find . | sort)

step "What programs see (plaintext view in $MNT)"
cat "$MNT/bank-link"
ls -l "$MNT/Documents"

step "What the disk and the cloud see (backing directory $VAULT)"
(cd "$VAULT" && find . -printf '%10s  %p\n' | sort -k2)
if grep -rqs "PIN: 4711" "$VAULT"; then echo "PLAINTEXT FOUND IN BACKING DIR"; exit 1; fi
echo "(grep for the plaintext 'PIN: 4711' in the backing directory: not found)"

step "Where does Documents/Taxes 2026/bank.txt live on disk?"
"$CRYPTFS" encrypt-name "$VAULT" "/Documents/Taxes 2026/bank.txt"

step "cryptfs unmount $MNT (uploads what is pending first)"
"$CRYPTFS" unmount "$MNT"
"$CRYPTFS" status "$VAULT"

step "What the cloud holds ($CLOUD): only ciphertext"
echo "(size in bytes, then the whole encrypted path of each object)"
(cd "$CLOUD" && find . -type f -printf '%10s  %p\n' | sort -k2)
if grep -rqs "PIN: 4711" "$CLOUD"; then echo "PLAINTEXT FOUND IN THE CLOUD"; exit 1; fi
"$CRYPTFS" audit-remote "$VAULT"

step "A new machine: cryptfs clone $CLOUD $RESTORED, then read a file back"
"$CRYPTFS" clone "$CLOUD" "$RESTORED"
"$CRYPTFS" cat "$RESTORED" "Documents/Taxes 2026/bank.txt"

step "Read it back offline, without FUSE: cryptfs ls / cat"
"$CRYPTFS" ls -l -R "$VAULT"
"$CRYPTFS" cat "$VAULT" "Documents/Taxes 2026/bank.txt"

step "Done. The demo vault is in $VAULT (passphrase in examples/demo.sh)."
cat <<EOF
Next, try it yourself with the demo vault (in a shell where
  export CRYPTFS_PASSWORD="$CRYPTFS_PASSWORD"
was run, or type that passphrase when asked):
  $CRYPTFS mount $VAULT $MNT      # then open $MNT in your file manager
  $CRYPTFS unmount $MNT
or make your own vault (asks for a passphrase): $CRYPTFS init ~/vault
To have the cryptfs command on your PATH: make install-user (README, "Install").
EOF
