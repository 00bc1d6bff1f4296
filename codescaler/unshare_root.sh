#!/bin/sh
# The root file system of the `unshare` isolation mode (codescaler/launch.py's fallback where bubblewrap cannot
# run). It runs as root of a new user and mount namespace (uid 65534 outside) and builds what bwrap builds: a
# root holding only the system directories, the interpreter, the harness and any extra paths (read-only), a
# private size-limited /tmp, /proc of the sandbox's PID namespace and five device nodes. Then it pivots into it
# and detaches the old root, so that no candidate can read the host's files (the tests among them): a chroot
# would not do, since root of the namespace may chroot again and walk out.
#
#   unshare_root.sh NEW_ROOT DISK_MB DIR:DIR:... COMMAND ...
#
# NEW_ROOT: an empty directory (a tmpfs is mounted on it here, seen by this mount namespace only);
# DIR:DIR:...: absolute paths shown at the same place inside (a symbolic link is copied as a link).
set -eu
root=$1
disk_mb=$2
dirs=$3
shift 3

mount -t tmpfs -o size=1m,mode=755 codescaler-root "$root"
IFS=:
for dir in $dirs; do
    if [ -L "$dir" ]; then
        mkdir -p "$root$(dirname "$dir")"
        ln -s "$(readlink "$dir")" "$root$dir"
    elif [ -e "$dir" ]; then
        mkdir -p "$root$dir"
        mount --rbind "$dir" "$root$dir"
        # read-only on top; where the kernel will not (locked flags), the host's file owners still forbid writes
        mount -o remount,bind,ro "$root$dir" 2>/dev/null || :
    fi
done
unset IFS
mkdir -p "$root/tmp" "$root/proc" "$root/dev" "$root/.old-root"
mount -t tmpfs -o size="${disk_mb}m",mode=1777 tmpfs "$root/tmp"
mount -t proc proc "$root/proc"
for node in null zero full random urandom; do
    : > "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
cd "$root"
PATH=/usr/sbin:/sbin:$PATH pivot_root . .old-root  # sbin only for this command: PATH is the candidates'
umount -l /.old-root
rmdir /.old-root
cd /tmp
exec env -i PATH="$PATH" "$@"  # the environment bwrap gives: PATH alone
