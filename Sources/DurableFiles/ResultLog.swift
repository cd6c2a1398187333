import DubfarmCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where one segment result lies in a job's ``ResultLog``, and whose it is.
package struct ResultRecord: Sendable, Hashable, Codable {
    /// The segment's index in its job.
    package var segment: Int
    /// The lease whose result this is.
    package var token: LeaseToken
    /// Byte offset of the record (its header) in the log.
    package var offset: Int64
    /// Bytes of the record, header included.
    package var length: Int64

    package init(segment: Int, token: LeaseToken, offset: Int64, length: Int64) {
        self.segment = segment
        self.token = token
        self.offset = offset
        self.length = length
    }

    /// `DFRL`, version, segment index, lease token, bundle length: 48 bytes, little-endian.
    package static let headerSize = 48
    static let magic: [UInt8] = Array("DFRL".utf8)
    static let version: UInt16 = 1

    /// The record's header.
    func header() -> [UInt8] {
        var w = ByteWriter(capacity: Self.headerSize)
        w.raw(Self.magic)
        w.u16(Self.version)
        w.u16(0)
        w.u64(UInt64(segment))
        w.u64(token.high)
        w.u64(token.low)
        w.u64(UInt64(length) - UInt64(Self.headerSize))
        w.u64(0)
        return w.bytes
    }

    /// Throws `.protocolViolation` unless `raw` starts with this record's header.
    package func check(header raw: UnsafeRawBufferPointer, in file: String) throws {
        func load(_ at: Int) -> UInt64 { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
        guard raw.count >= Self.headerSize, Array(raw[0..<4]) == Self.magic,
              UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 4, as: UInt16.self)) == Self.version else {
            throw DubfarmError(.protocolViolation, "\(file): no result record at byte \(offset)")
        }
        guard load(8) == UInt64(segment), load(16) == token.high, load(24) == token.low,
              load(32) == UInt64(length) - UInt64(Self.headerSize) else {
            throw DubfarmError(.protocolViolation, "\(file): the record at byte \(offset) is not segment \(segment)'s result under lease \(token)")
        }
    }
}

/// A job's segment results in one append-only file.
///
/// Each result is a record: a 48-byte header naming the segment and the lease, then the packet
/// bundle exactly as ``PacketBundle/encoded()`` lays it out. Writers reserve their byte range
/// up front, write it with `pwritev` and `fdatasync` the file, so results of several workers go
/// in side by side; only then is the record's place committed to the database, which alone says
/// which record is a segment's result. A record cut short by a crash, or the result of a
/// superseded lease, is never referenced; the stitch checks each record's header against the
/// segment and lease it expects.
///
/// One file per job instead of one per result: no file is created, renamed or listed per
/// segment, which on a busy farm with short segments is most of the work of storing a result.
package final class ResultLog: Sendable {
    package let path: String
    private let fd: Int32
    /// The next free byte.
    private let end: Mutex<Int64>

    /// Opens (creating it, and flushing its directory so the name survives a crash) the log at
    /// `path`. Appends go after whatever the file holds.
    package init(path: String) throws {
        self.path = path
        var fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd >= 0 {
            MediaFile.syncDirectory(MediaFile.directory(of: path))
        } else if errno == EEXIST {
            fd = open(path, O_RDWR | O_CLOEXEC)
        }
        guard fd >= 0 else { throw MediaFile.writeError(errno, path, "cannot open the result log") }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            close(fd)
            throw DubfarmError(.io, "\(fileName(path)): cannot stat the result log")
        }
        self.fd = fd
        end = Mutex(Int64(st.st_size))
    }

    deinit { close(fd) }

    /// Appends `bundle` as segment `segment`'s result under lease `token` and makes it durable
    /// (`fdatasync`); returns where it lies. A failed append leaves at most an unreferenced gap.
    package func append(_ bundle: PacketBundle, segment: Int, token: LeaseToken) throws -> ResultRecord {
        let record = try write(bundle, segment: segment, token: token)
        try sync()
        return record
    }

    /// Writes `bundle` as segment `segment`'s result under lease `token` without waiting for the
    /// disk; returns where it lies. The record must not be referenced (committed to the database)
    /// before a ``sync()`` that started after this returned: one `fdatasync` then covers every
    /// record written before it, so a group of results costs one flush, not one each.
    package func write(_ bundle: PacketBundle, segment: Int, token: LeaseToken) throws -> ResultRecord {
        let header = bundle.encodedHeader()
        let length = Int64(ResultRecord.headerSize + MediaFile.encodedSize(bundle, header: header))
        let offset = end.withLock { end in
            defer { end += length }
            return end
        }
        let record = ResultRecord(segment: segment, token: token, offset: offset, length: length)
        let written = try MediaFile.write(bundle, header: header, prefix: record.header(), to: fd, at: offset, path: path)
        guard written == length else {
            throw DubfarmError(.io, "\(fileName(path)): wrote \(written) of \(length) bytes of segment \(segment)'s result")
        }
        return record
    }

    /// Makes every record written so far durable (`fdatasync`).
    package func sync() throws {
        try MediaFile.sync(fd, path: path, dataOnly: true)
    }
}
