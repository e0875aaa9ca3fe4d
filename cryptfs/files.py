"""Block I/O on one open backing file: read, read-modify-write, truncate.

One ``OpenFile`` exists per backing inode while it is open (shared by all handles and
hard links), and its lock serialises the read-modify-write of blocks so that concurrent
writers never interleave inside a block. Different files never share a lock.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Iterator

from nacl._sodium import ffi

from .content import BLOCK_OVERHEAD, HEADER_LEN, ContentCipher, FileCipher
from .errors import IntegrityError
from .parallel import run_split


class OpenFile:
    """The plaintext view of one backing file descriptor."""

    def __init__(self, fd: int, content: ContentCipher, label: str, writable: bool) -> None:
        self.fd = fd
        self.content = content
        self.label = label  # backing path, for log messages
        self.writable = writable
        self.lock = threading.Lock()
        self.refs = 1
        self.key: tuple[int, int] | None = None  # (st_dev, st_ino) in the open-file table
        self.paths: dict[str, int] = {}  # plaintext path -> open handles through it
        self._cipher: FileCipher | None = None
        # (index, plaintext) of the file's last block as this object last wrote it: an
        # append then re-encrypts that short block without reading and decrypting it
        # first (a tar or log append pattern). Only this object writes its descriptor.
        self._tail: tuple[int, bytes] | None = None
        self._header = b""
        header = os.pread(fd, HEADER_LEN, 0)
        if header:
            # A short or invalid header is reported when data is touched, not at open.
            try:
                self._cipher = content.file_cipher(header)
                self._header = header
            except IntegrityError:
                self._cipher = None

    # -- helpers -------------------------------------------------------------------------
    def _cipher_or_fail(self) -> FileCipher:
        if self._cipher is None:
            raise IntegrityError("file header is missing or invalid")
        return self._cipher

    def _backing_size(self) -> int:
        return os.fstat(self.fd).st_size

    def size(self) -> int:
        """Plaintext size; IntegrityError if the backing size is impossible."""
        return self.content.plain_size(self._backing_size())

    def _read_block(self, cipher: FileCipher, index: int, plain_size: int) -> bytes:
        bs = self.content.block_size
        want = min(bs, plain_size - index * bs)
        if want < 0:
            return b""
        stored = os.pread(self.fd, want + BLOCK_OVERHEAD, self.content.block_offset(index))
        plain = cipher.decrypt_block(index, stored)
        if len(plain) != want:
            raise IntegrityError(f"block {index} has the wrong length")
        return plain

    # -- reading -------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` plaintext bytes at ``offset`` (fewer at the end of the file)."""
        out = bytearray(max(0, min(size, self.size() - offset)))
        out_c = ffi.from_buffer("unsigned char[]", out)
        try:
            count = self.read_into(offset, len(out), out_c)
        finally:
            ffi.release(out_c)
        del out[count:]
        return bytes(out)

    def read_into(self, offset: int, size: int, dest) -> int:
        """Decrypt up to ``size`` bytes at ``offset`` straight into the cffi buffer
        ``dest`` (e.g. the FUSE reply buffer: no intermediate copies); returns the count.
        On IntegrityError ``dest`` holds nothing meaningful and must not be returned."""
        with self.lock:
            backing_size = self._backing_size()  # one fstat per read request
            plain_size = self.content.plain_size(backing_size)
            end = min(plain_size, offset + size)
            cipher = self._cipher_or_fail()
            if end == plain_size and plain_size % self.content.block_size == 0:
                # The empty last block holds no data but proves the file ends here: a
                # file cut to "k full blocks + 40 bytes" must not read as k full blocks.
                self._read_block(cipher, plain_size // self.content.block_size, plain_size)
            if offset >= end:
                return 0
            bs = self.content.block_size
            sb = self.content.stored_block
            first, last = offset // bs, (end - 1) // bs
            start = self.content.block_offset(first)
            stop = min(self.content.block_offset(last + 1), backing_size)
            raw = os.pread(self.fd, stop - start, start)
            raw_c = ffi.from_buffer(raw)

            def decrypt(a: int, b: int) -> None:
                scratch = None
                for i in range(a, b):
                    rel = (i - first) * sb
                    expect = min(bs, plain_size - i * bs)
                    length = min(sb, len(raw) - rel)
                    if length != expect + BLOCK_OVERHEAD:
                        raise IntegrityError(f"block {i} has the wrong length")
                    lo = i * bs
                    if lo >= offset and lo + expect <= end:  # whole block wanted
                        cipher.decrypt_into(dest, lo - offset, i, raw, raw_c, rel, length)
                        continue
                    if scratch is None:
                        scratch = ffi.new("unsigned char[]", bs)
                    cipher.decrypt_into(scratch, 0, i, raw, raw_c, rel, length)
                    a0, b0 = max(lo, offset), min(lo + expect, end)
                    ffi.memmove(dest + (a0 - offset), scratch + (a0 - lo), b0 - a0)

            run_split(first, last + 1, decrypt)
            return end - offset

    # -- writing -------------------------------------------------------------------------
    def write(self, offset: int, data: bytes, append: bool = False) -> int:
        with self.lock:
            old = self.size()
            if append:
                offset = old
            self._rewrite(old, max(old, offset + len(data)), offset, data)
            return len(data)

    def truncate(self, length: int) -> None:
        with self.lock:
            if length == 0 or self._cipher is None:
                self._reset_empty()
                if length:
                    self._rewrite(0, length, length, b"")
                return
            old = self.size()
            if length != old:
                self._rewrite(old, length, length, b"")

    def _reset_empty(self) -> None:
        """Rewrite as a valid empty file. The file keeps its id (its extended attributes
        are keyed by it; every block write draws a fresh random nonce anyway); a file
        whose header was unreadable gets a new one."""
        if self._cipher is not None and self._backing_size() == self.content.backing_size(0):
            return
        header = self._header if self._cipher is not None else self.content.new_header()
        cipher = self.content.file_cipher(header)
        self._tail = None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, header + cipher.encrypt_block(0, b""), 0)
        self._cipher = cipher
        self._header = header
        self._tail = (0, b"")

    def _rewrite(self, old: int, new: int, offset: int, data: bytes) -> None:
        """Make the file ``new`` bytes long with ``data`` at ``offset``; touch only the
        blocks that change (FORMAT.md §4: the last block stays short, gaps stay holes)."""
        cipher = self._cipher_or_fail()
        bs = self.content.block_size
        end = offset + len(data)
        indices: set[int] = set()
        if data:
            indices.update(range(offset // bs, (end - 1) // bs + 1))
        if new != old:
            indices.add(old // bs)
            indices.add(new // bs)
        last = new // bs
        todo = sorted(i for i in indices if i <= last)
        view = memoryview(data)
        runs: list[tuple[int, list]] = []  # (first index, plaintexts of consecutive blocks)
        tail, self._tail = self._tail, None  # unknown until the blocks are on disk
        new_tail = tail if tail is not None and tail[0] == last else None
        for i in todo:
            lo = i * bs
            length = min(bs, new - lo)
            if data and offset <= lo and lo + length <= end:
                plain = view[lo - offset:lo - offset + length]
            else:
                if not length or lo >= old:
                    keep = b""
                elif tail is not None and tail[0] == i and len(tail[1]) == min(bs, old - lo):
                    keep = tail[1]
                else:
                    keep = self._read_block(cipher, i, old)
                buf = bytearray(keep[:length])
                buf.extend(bytes(length - len(buf)))
                if data and offset < lo + length and end > lo:
                    a, b = max(offset, lo), min(end, lo + length)
                    buf[a - lo:b - lo] = view[a - offset:b - offset]
                plain = buf
            if i == last:
                new_tail = (i, bytes(plain))
            if runs and runs[-1][0] + len(runs[-1][1]) == i:
                runs[-1][1].append(plain)
            else:
                runs.append((i, [plain]))
        blobs = [(self.content.block_offset(first), self._encrypt_run(cipher, first, plains))
                 for first, plains in runs]
        if new > old:
            # Reserve the space first: a full disk then fails the write before any block
            # is touched, instead of leaving a half-written block behind (ENOSPC).
            old_end = self.content.backing_size(old)
            for offset, blob in blobs:
                end = offset + len(blob)
                if end > old_end:
                    _reserve(self.fd, max(offset, old_end), end - max(offset, old_end))
        for offset, blob in blobs:
            _pwrite_all(self.fd, blob, offset)
        if new < old:
            os.ftruncate(self.fd, self.content.backing_size(new))
        self._tail = new_tail

    @staticmethod
    def _encrypt_run(cipher: FileCipher, first: int, plains: list) -> bytearray:
        """Consecutive blocks encrypted into one buffer, for one pwrite. Nonces are drawn
        here, in block order, before the blocks are spread over threads."""
        out = bytearray(sum(len(p) for p in plains) + BLOCK_OVERHEAD * len(plains))
        out_c = ffi.from_buffer("unsigned char[]", out)
        nonces = [cipher.new_nonce() for _ in plains]
        starts = [0]
        for plain in plains:
            starts.append(starts[-1] + len(plain) + BLOCK_OVERHEAD)

        def encrypt(a: int, b: int) -> None:
            for k in range(a, b):
                cipher.encrypt_into(out, out_c, starts[k], first + k, plains[k], nonces[k])

        run_split(0, len(plains), encrypt)
        return out

    def check_blocks(self) -> Iterator[tuple[int, int, str | None]]:
        """(index, plaintext bytes, problem or None) for every block; for fsck."""
        plain_size = self.size()
        cipher = self._cipher_or_fail()
        bs = self.content.block_size
        for index in range(plain_size // bs + 1):
            length = min(bs, plain_size - index * bs)
            try:
                self._read_block(cipher, index, plain_size)
            except IntegrityError as exc:
                yield index, length, str(exc)
            else:
                yield index, length, None

    def fsync(self, datasync: bool) -> None:
        (os.fdatasync if datasync else os.fsync)(self.fd)


_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = getattr(_libc, "fallocate64", None) or getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_FALLOC_FL_KEEP_SIZE = 1
_fallocate_works = True


def _reserve(fd: int, offset: int, length: int) -> None:
    """Allocate backing blocks without changing the file size (best effort)."""
    global _fallocate_works
    if _fallocate is None or not _fallocate_works or length <= 0:
        return
    if _fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        if err in (errno.EOPNOTSUPP, errno.ENOSYS):
            _fallocate_works = False
        elif err == errno.ENOSPC or err == errno.EDQUOT:
            raise OSError(err, os.strerror(err))


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "short write to backing file")
        view = view[n:]
        offset += n
