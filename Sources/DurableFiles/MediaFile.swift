// DurableFiles: files the farm must not lose or half-write. Atomic writes (temporary name,
// fsync, rename, directory fsync), packet bundles written straight from their packets' buffers,
// and a job's append-only result log. Plain POSIX I/O; no libav* here.
import DubfarmCore
#if canImport(Glibc)
import Glibc
#endif

/// File helpers used by the writers: temporary names, fsync, atomic rename, whole-file reads.
package enum MediaFile {
    /// A temporary name in the same directory as `path` (so the final rename is atomic).
    package static func temporaryPath(for path: String) -> String {
        let dir: String
        let base: String
        if let slash = path.lastIndex(of: "/") {
            dir = String(path[..<slash])
            base = String(path[path.index(after: slash)...])
        } else {
            dir = "."
            base = path
        }
        let tag = String(UInt64.random(in: 0...UInt64.max), radix: 36)
        return "\(dir.isEmpty ? "" : dir)/.\(base).tmp-\(getpid())-\(tag)"
    }

    /// Flushes a file's data to disk.
    package static func fsync(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw DubfarmError(.io, "\(fileName(path)): cannot open to flush (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        try sync(fd, path: path, dataOnly: false)
    }

    /// `fsync` (or `fdatasync`) of `fd`, the file at `path`.
    static func sync(_ fd: Int32, path: String, dataOnly: Bool) throws {
        if (dataOnly ? Glibc.fdatasync(fd) : Glibc.fsync(fd)) != 0 { throw writeError(errno, path, "fsync failed") }
    }

    /// The error for a failed write, flush or creation of `path` (`e` is its errno):
    /// `.diskFull` when the disk or the quota is full, else `.io` saying `what` failed and why.
    static func writeError(_ e: Int32, _ path: String, _ what: String) -> DubfarmError {
        if e == ENOSPC || e == EDQUOT { return DubfarmError(.diskFull, "\(fileName(path)): the disk is full; free space and retry") }
        return DubfarmError(.io, "\(fileName(path)): \(what) (\(String(cString: strerror(e))))")
    }

    /// Flushes the directory `dir` (a rename or a new name in it survives a crash); best effort.
    package static func syncDirectory(_ dir: String) {
        let fd = open(dir.isEmpty ? "/" : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            _ = Glibc.fsync(fd)
            close(fd)
        }
    }

    /// The directory part of `path` (`.` when it has none).
    static func directory(of path: String) -> String {
        path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
    }

    /// Renames `tmp` to `path` and flushes the directory so the rename survives a crash.
    package static func commit(_ tmp: String, to path: String) throws {
        if rename(tmp, path) != 0 {
            throw DubfarmError(.io, "\(fileName(path)): cannot move the finished file into place (\(String(cString: strerror(errno))))")
        }
        syncDirectory(directory(of: path))
    }

    /// Writes `bytes` to a temporary file next to `path`, fsyncs it and renames it into place.
    package static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        _ = try writeAtomically(to: path) { fd in
            try bytes.withUnsafeBytes { raw in
                var iov = [iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress), iov_len: raw.count)]
                var position: Int64? = nil
                return try writeFully(fd, &iov, at: &position, path)
            }
        }
    }

    /// Creates a temporary file next to `path`, lets `write` fill it, fsyncs it and renames it
    /// into place; on any error the temporary file is removed. Returns what `write` returned.
    static func writeAtomically(to path: String, _ write: (_ fd: Int32) throws -> Int) throws -> Int {
        let tmp = temporaryPath(for: path)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw DubfarmError(.io, "\(fileName(path)): cannot create (\(String(cString: strerror(errno))))") }
        var ok = false
        defer { if !ok { unlink(tmp) } }
        let total: Int
        do {
            defer { close(fd) }
            total = try write(fd)
            try sync(fd, path: path, dataOnly: false)
        }
        try commit(tmp, to: path)
        ok = true
        return total
    }

    /// Reads a whole file.
    package static func read(path: String) throws -> [UInt8] {
        try withOpenFile(path) { fd, size in
            var out = [UInt8](repeating: 0, count: size)
            try out.withUnsafeMutableBytes { raw in try readFully(fd, into: raw.baseAddress, count: size, path: path) }
            return out
        }
    }

    /// Opens `path` read-only and passes its descriptor and size to `body`. Throws `.notFound`
    /// for a missing file and `.io` for one that cannot be opened or stat'ed.
    package static func withOpenFile<T>(_ path: String, _ body: (_ fd: Int32, _ size: Int) throws -> T) throws -> T {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let e = errno
            if e == ENOENT { throw DubfarmError(.notFound, "\(fileName(path)): file not found") }
            throw DubfarmError(.io, "\(fileName(path)): cannot open (\(String(cString: strerror(e))))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw DubfarmError(.io, "\(fileName(path)): cannot stat") }
        return try body(fd, Int(st.st_size))
    }

    /// Reads `count` bytes of `fd` from byte `start` into `base`, retrying short reads and EINTR.
    static func readFully(_ fd: Int32, into base: UnsafeMutableRawPointer?, count: Int, at start: Int = 0, path: String) throws {
        var off = 0
        while off < count {
            let n = pread(fd, base! + off, count - off, off_t(start + off))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw DubfarmError(.io, "\(fileName(path)): short read at byte \(off) of \(count)") }
            off += n
        }
    }
}
