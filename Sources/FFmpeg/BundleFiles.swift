import CFFmpeg
import DubfarmCore
#if canImport(Glibc)
import Glibc
#endif

// Packet bundles on disk without extra copies of their payloads: written with `writev` straight
// from the packets' own buffers, read back into one FFmpeg buffer that the muxer's packets
// reference in place.

extension MediaFile {
    /// Writes `bundle` as ``PacketBundle/encoded()`` would, to a temporary file next to `path`,
    /// fsyncs it and renames it into place (as ``writeAtomically(_:to:)``), without building
    /// the encoded bytes in memory: the payloads go to the kernel from where they lie.
    /// Returns the file's size.
    @discardableResult
    package static func writeAtomically(bundle: PacketBundle, to path: String) throws -> Int {
        try writeAtomically(to: path) { fd in try write(bundle, header: bundle.encodedHeader(), to: fd, at: nil, path: path) }
    }

    /// Bytes ``PacketBundle/encoded()`` would produce for `bundle` whose header is `header`.
    static func encodedSize(_ bundle: PacketBundle, header: [UInt8]) -> Int {
        header.count + bundle.packets.count * PacketBundleLayout.packetHeaderSize + bundle.packets.reduce(0) { $0 + $1.data.count }
    }

    /// Writes `prefix` and then `bundle`'s encoding (its `header`, then each packet's header and
    /// payload) to `fd`: at the file position (`writev`), or at byte `offset` (`pwritev`). The
    /// payloads go to the kernel from their own buffers. Returns the bytes written.
    static func write(_ bundle: PacketBundle, header: [UInt8], prefix: [UInt8] = [], to fd: Int32, at offset: Int64?,
                      path: String) throws -> Int {
        let hsz = PacketBundleLayout.packetHeaderSize
        let packets = bundle.packets
        var heads = [UInt8](repeating: 0, count: packets.count * hsz)
        heads.withUnsafeMutableBytes { h in
            for (i, p) in packets.enumerated() { PacketBundle.packetHeader(p, to: h.baseAddress! + i * hsz) }
        }
        var position = offset
        var total = 0
        try prefix.withUnsafeBytes { pb in
            try header.withUnsafeBytes { hb in
                try heads.withUnsafeBytes { hh in
                    var iov: [iovec] = []
                    iov.reserveCapacity(2 * chunk + 2)
                    if pb.count > 0 { iov.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: pb.baseAddress), iov_len: pb.count)) }
                    iov.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: hb.baseAddress), iov_len: hb.count))
                    // Each payload's pointer is valid only inside its withUnsafeBytes: nest them
                    // `chunk` deep, write, go on with the next chunk.
                    func emit(_ i: Int, _ end: Int) throws {
                        guard i < end else {
                            total += try writeFully(fd, &iov, at: &position, path)
                            iov.removeAll(keepingCapacity: true)
                            return
                        }
                        try packets[i].data.withUnsafeBytes { d in
                            iov.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: hh.baseAddress! + i * hsz), iov_len: hsz))
                            if d.count > 0 { iov.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: d.baseAddress!), iov_len: d.count)) }
                            try emit(i + 1, end)
                        }
                    }
                    var start = 0
                    repeat {
                        let end = min(packets.count, start + chunk)
                        try emit(start, end)
                        start = end
                    } while start < packets.count
                }
            }
        }
        return total
    }

    /// Packets per `writev` (two vectors each; IOV_MAX is 1024 on Linux).
    private static let chunk = 256

    /// Writes every byte of `iov` (retrying short writes), at `position` when given (advancing
    /// it); returns how many.
    static func writeFully(_ fd: Int32, _ iov: inout [iovec], at position: inout Int64?, _ path: String) throws -> Int {
        var total = 0
        var first = 0
        while first < iov.count {
            let n = iov[first...].withUnsafeBufferPointer { v in
                position.map { pwritev(fd, v.baseAddress, Int32(v.count), off_t($0)) } ?? writev(fd, v.baseAddress, Int32(v.count))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw writeError(errno, path, "write failed")
            }
            total += n
            position? += Int64(n)
            var left = n
            while first < iov.count && left >= iov[first].iov_len {
                left -= iov[first].iov_len
                first += 1
            }
            if left > 0 {
                iov[first].iov_base += left
                iov[first].iov_len -= left
            }
        }
        return total
    }
}

/// A packet bundle read into one FFmpeg buffer (a whole bundle file, or one record of a
/// ``ResultLog``); its packets are handed to the muxer as references into that buffer (no copy
/// per packet).
final class BundleFile {
    private let buffer: UnsafeMutablePointer<AVBufferRef>
    let layout: PacketBundleLayout
    /// Where the bundle starts in the buffer (after a result record's header).
    private let start: Int

    /// Reads and parses the bundle file `path`, or, given `record`, that record of the result
    /// log `path` (its header must name the record's segment and lease). Throws `.notFound` for
    /// a missing file, `.io` for an unreadable one, `.protocolViolation` for a damaged one or
    /// a record that is not the one asked for.
    init(path: String, record: ResultRecord? = nil) throws {
        let (b, size) = try MediaFile.withOpenFile(path) { fd, fileSize -> (UnsafeMutablePointer<AVBufferRef>, Int) in
            var size = fileSize, at = 0
            if let record {
                guard record.offset >= 0, record.length >= ResultRecord.headerSize, record.offset + record.length <= Int64(fileSize) else {
                    throw DubfarmError(.protocolViolation, "\(fileName(path)): the result record at byte \(record.offset) (\(record.length) bytes) lies past the end of the file (\(fileSize) bytes)")
                }
                size = Int(record.length)
                at = Int(record.offset)
            }
            let padding = Int(AV_INPUT_BUFFER_PADDING_SIZE)
            guard let b = av_buffer_alloc(size + padding) else {
                throw DubfarmError(.internalError, "\(fileName(path)): cannot allocate \(size) bytes")
            }
            let base = UnsafeMutableRawPointer(b.pointee.data!)
            memset(base + size, 0, padding)
            do { try MediaFile.readFully(fd, into: base, count: size, at: at, path: path) } catch {
                var q: UnsafeMutablePointer<AVBufferRef>? = b
                av_buffer_unref(&q)
                throw error
            }
            return (b, size)
        }
        buffer = b
        let base = UnsafeMutableRawPointer(b.pointee.data!)
        do {
            if let record {
                try record.check(header: UnsafeRawBufferPointer(start: base, count: size), in: fileName(path))
                start = ResultRecord.headerSize
            } else {
                start = 0
            }
            layout = try PacketBundleLayout(scanning: UnsafeRawBufferPointer(start: base + start, count: size - start))
        } catch {
            var q: UnsafeMutablePointer<AVBufferRef>? = b
            av_buffer_unref(&q)
            throw error
        }
    }

    deinit {
        var q: UnsafeMutablePointer<AVBufferRef>? = buffer
        av_buffer_unref(&q)
    }

    /// Makes `pkt` packet `i` of the bundle: a new reference to the file's buffer, pointing at
    /// the payload (the muxer may keep it queued after this object is gone).
    func load(_ i: Int, into pkt: Packet) throws {
        let s = layout.packets[i]
        av_packet_unref(pkt.p)
        guard let ref = av_buffer_ref(buffer) else { throw DubfarmError(.internalError, "cannot reference a packet buffer") }
        pkt.p.pointee.buf = ref
        pkt.p.pointee.data = ref.pointee.data + start + s.offset
        pkt.p.pointee.size = Int32(s.size)
        pkt.p.pointee.pts = s.pts
        pkt.p.pointee.dts = s.dts
        pkt.p.pointee.duration = s.duration
        pkt.p.pointee.flags = s.isKey ? AV_PKT_FLAG_KEY : 0
    }
}
