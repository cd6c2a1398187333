import DubfarmCore
import FFmpeg
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A job's input video, opened once at the coordinator, handing out the compressed packets of
/// segment windows.
///
/// Packets are read straight from the file by byte position (`pread`, no demux) when the index
/// has positions; otherwise (positions -1) the window is found by seeking and demuxing.
/// Safe to share between threads: the `pread` path has no shared file offset and the demux
/// fallback is serialized by a lock.
package final class SourceVideo: @unchecked Sendable {
    package let path: String
    package let codec: CodecParameters
    package let index: PacketIndex
    package let info: VideoStreamInfo?
    private let fd: Int32
    private let demuxer = Mutex<InputFile?>(nil)
    private let name: String

    /// Opens `path` with an index built earlier by ``SourceIndexer`` (e.g. loaded from the media store).
    package init(path: String, codec: CodecParameters, index: PacketIndex, info: VideoStreamInfo? = nil) throws {
        self.name = fileName(path)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let e = errno
            if e == ENOENT { throw DubfarmError(.notFound, "\(fileName(path)): file not found") }
            throw DubfarmError(.io, "\(fileName(path)): cannot open (\(String(cString: strerror(e))))")
        }
        var st = stat()
        let end = index.entries.reduce(Int64(0)) { max($0, $1.position + Int64($1.size)) }
        guard fstat(fd, &st) == 0, Int64(st.st_size) >= end else {
            close(fd)
            throw DubfarmError(.badInput, "\(fileName(path)): the file is shorter than its packet index says; it was truncated or replaced since it was indexed")
        }
        self.fd = fd
        self.path = path
        self.codec = codec
        self.index = index
        self.info = info
    }

    /// Indexes `path` (one demux pass) and opens it.
    package convenience init(path: String) throws {
        let r = try SourceIndexer.index(path: path)
        try self.init(path: path, codec: r.codec, index: r.index, info: r.info)
    }

    deinit { close(fd) }

    /// The compressed packets of `window` with the codec parameters needed to decode them.
    package func bundle(for window: PacketIndex.Window) throws -> PacketBundle {
        try farmErrors { try bundle(packets: window.packets) }
    }

    private func bundle(packets range: Range<Int>) throws -> PacketBundle {
        guard !range.isEmpty, range.lowerBound >= 0, range.upperBound <= index.entries.count else {
            throw DubfarmError(.internalError, "\(name): packet window \(range) lies outside the index (0..<\(index.entries.count))")
        }
        let entries = index.entries[range]
        if entries.allSatisfy({ $0.position >= 0 }) {
            return PacketBundle(codec: codec, packets: try readByPosition(entries))
        }
        return PacketBundle(codec: codec, packets: try readByDemuxing(range))
    }

    /// Reads packets by position: one `pread` per packet, straight into the packet's own
    /// (uninitialised) buffer, so each byte is copied once, from the page cache. (Reading the
    /// span into one buffer and slicing it copied every byte twice and cost a fresh allocation
    /// of the whole span per segment.)
    private func readByPosition(_ entries: ArraySlice<PacketIndex.Entry>) throws -> [EncodedPacket] {
        var packets: [EncodedPacket] = []
        packets.reserveCapacity(entries.count)
        for e in entries {
            let size = Int(e.size)
            let data = try [UInt8](unsafeUninitializedCapacity: size) { b, count in
                if size > 0 { try preadFully(UnsafeMutableRawPointer(b.baseAddress!), size, e.position) }
                count = size
            }
            packets.append(EncodedPacket(pts: e.pts, dts: e.dts, duration: e.duration, isKey: e.isKey, data: data))
        }
        return packets
    }

    private func preadFully(_ base: UnsafeMutableRawPointer, _ count: Int, _ offset: Int64) throws {
        var done = 0
        while done < count {
            let n = pread(fd, base + done, count - done, off_t(offset + Int64(done)))
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw DubfarmError(.io, "\(name): read failed at byte \(offset + Int64(done)) (\(String(cString: strerror(errno))))") }
            if n == 0 { throw DubfarmError(.badInput, "\(name): the file ends at byte \(offset + Int64(done)), before the packets the index lists; it was truncated or replaced") }
            done += n
        }
    }

    /// Seeks to the window's first keyframe and demuxes its packets.
    private func readByDemuxing(_ range: Range<Int>) throws -> [EncodedPacket] {
        try demuxer.withLock { demuxer in
            if demuxer == nil { demuxer = try InputFile(path: path, findStreamInfo: false) }
            return try readByDemuxing(range, input: demuxer!)
        }
    }

    private func readByDemuxing(_ range: Range<Int>, input: InputFile) throws -> [EncodedPacket] {
        guard let v = input.videoStreamIndex() else {
            throw DubfarmError(.badInput, "\(name): no video stream")
        }
        input.discardAll(except: v)
        let first = index.entries[range.lowerBound]
        if !input.seek(stream: v, toKeyframeBefore: first.dts) { try input.rewind() }
        let pkt = Packet()
        var out: [EncodedPacket] = []
        out.reserveCapacity(range.count)
        var started = false
        var rewound = false
        while out.count < range.count {
            let more: Bool
            do {
                more = try input.read(into: pkt) { $0 }
            } catch let e as FFmpegError {
                more = false
                if started || rewound { throw notFound(range, e.message) }
            }
            if !more {
                // The seek landed past the window (inexact index): start over from the beginning once.
                if !started && !rewound {
                    rewound = true
                    if (try? input.rewind()) != nil { continue }
                }
                throw notFound(range, "End of file")
            }
            guard pkt.streamIndex == v else { continue }
            let pts = pkt.pts != noTimestamp ? pkt.pts : pkt.dts
            if !started {
                guard pts == first.pts && pkt.isKey else { continue }
                started = true
            }
            let e = index.entries[range.lowerBound + out.count]
            // A packet is known by what the container stores: its pts and its size. Decode
            // timestamps are not compared: Matroska stores none, and what libavformat derives
            // for them after a seek need not equal what the indexing scan derived (the index's
            // are the ones handed out).
            let mismatch: (field: String, got: Int64, expected: Int64)? =
                pkt.pts != noTimestamp && pts != e.pts ? ("pts", pts, e.pts)
                : Int64(pkt.size) != Int64(e.size) ? ("size", Int64(pkt.size), Int64(e.size)) : nil
            if let mismatch {
                throw DubfarmError(.badInput, "\(name): video packet \(range.lowerBound + out.count) differs from the index: \(mismatch.field) \(mismatch.got), the index says \(mismatch.expected); the file changed since it was indexed")
            }
            out.append(EncodedPacket(pts: e.pts, dts: e.dts, duration: e.duration, isKey: e.isKey, data: pkt.bytes))
        }
        return out
    }

    private func notFound(_ range: Range<Int>, _ reason: String) -> DubfarmError {
        DubfarmError(.badInput, "\(name): cannot find video packets \(range) when demuxing (\(reason)); the file changed since it was indexed")
    }
}
