import DubfarmCore
#if canImport(Glibc)
import Glibc
#endif

// Packet bundles on disk without extra copies of their payloads: written with `writev` straight
// from the packets' own buffers (MediaPipeline's BundleFile reads them back into one buffer that
// the muxer's packets reference in place).

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
