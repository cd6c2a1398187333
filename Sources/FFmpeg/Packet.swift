import CFFmpeg
#if canImport(Glibc)
import Glibc
#endif

/// A compressed packet (`AVPacket`), freed on deinit. Reused across reads: each read or load
/// replaces what it held.
package final class Packet {
    let p: UnsafeMutablePointer<AVPacket>

    package init() {
        guard let p = av_packet_alloc() else { fatalError("out of memory allocating an AVPacket") }
        self.p = p
    }

    deinit {
        var q: UnsafeMutablePointer<AVPacket>? = p
        av_packet_free(&q)
    }

    /// Presentation timestamp in the stream's time base (``noTimestamp`` when the container has none).
    package var pts: Int64 {
        get { p.pointee.pts }
        set { p.pointee.pts = newValue }
    }
    /// Decode timestamp (``noTimestamp`` when unknown).
    package var dts: Int64 {
        get { p.pointee.dts }
        set { p.pointee.dts = newValue }
    }
    package var duration: Int64 { p.pointee.duration }
    package var isKey: Bool { (p.pointee.flags & AV_PKT_FLAG_KEY) != 0 }
    /// The container hides the frame (an edit list trims it): decoders need it as a reference
    /// but do not output it.
    package var isDiscarded: Bool { (p.pointee.flags & AV_PKT_FLAG_DISCARD) != 0 }
    /// The demuxer found the packet damaged or cut short.
    package var isCorrupt: Bool { (p.pointee.flags & AV_PKT_FLAG_CORRUPT) != 0 }
    /// Byte position in the file, -1 when the container does not say.
    package var position: Int64 { p.pointee.pos }
    package var size: Int { Int(p.pointee.size) }
    /// The stream the packet belongs to (after ``InputFile/read(into:failure:)``).
    package var streamIndex: Int { Int(p.pointee.stream_index) }

    /// A copy of the payload.
    package var bytes: [UInt8] {
        let n = Int(p.pointee.size)
        return n > 0 ? [UInt8](UnsafeBufferPointer(start: p.pointee.data, count: n)) : []
    }

    /// Drops the payload and properties.
    package func unref() { av_packet_unref(p) }

    /// Replaces the contents with a padded copy of `data` and the given timing.
    package func load(data: [UInt8], pts: Int64, dts: Int64, duration: Int64, isKey: Bool) throws {
        av_packet_unref(p)
        let r = av_new_packet(p, Int32(data.count))
        guard r >= 0 else { throw FFmpegError(.internalError, "cannot allocate a packet of \(data.count) bytes (\(avErrorString(r)))") }
        if !data.isEmpty {
            data.withUnsafeBufferPointer { src in _ = memcpy(p.pointee.data, src.baseAddress!, src.count) }
        }
        setTiming(pts: pts, dts: dts, duration: duration, isKey: isKey)
    }

    /// Makes this packet bytes `offset ..< offset + size` of `buffer`: a new reference to it, not
    /// a copy (a muxer may keep the packet queued after `buffer` is gone).
    package func reference(_ buffer: SharedBuffer, offset: Int, size: Int, pts: Int64, dts: Int64, duration: Int64, isKey: Bool) throws {
        precondition(offset >= 0 && size >= 0 && offset + size <= buffer.count, "packet outside its buffer")
        av_packet_unref(p)
        guard let ref = av_buffer_ref(buffer.ref) else { throw FFmpegError(.internalError, "cannot reference a packet buffer") }
        p.pointee.buf = ref
        p.pointee.data = ref.pointee.data + offset
        p.pointee.size = Int32(size)
        setTiming(pts: pts, dts: dts, duration: duration, isKey: isKey)
    }

    /// Takes over `other`'s contents, leaving it empty.
    package func take(from other: Packet) {
        av_packet_unref(p)
        av_packet_move_ref(p, other.p)
    }

    /// Whether the file open as `fd` holds this packet's payload at ``position``. `scratch` is a
    /// reusable read buffer (grown as needed).
    package func matchesFile(_ fd: Int32, scratch: inout [UInt8]) -> Bool {
        let size = self.size
        guard position >= 0 else { return false }
        if scratch.count < size { scratch = [UInt8](repeating: 0, count: size) }
        guard size > 0, let data = p.pointee.data else { return true }
        let pos = position
        return scratch.withUnsafeMutableBytes { buf in
            let n = pread(fd, buf.baseAddress!, size, off_t(pos))
            return n == size && memcmp(buf.baseAddress!, data, size) == 0
        }
    }

    private func setTiming(pts: Int64, dts: Int64, duration: Int64, isKey: Bool) {
        p.pointee.pts = pts
        p.pointee.dts = dts
        p.pointee.duration = duration
        p.pointee.flags = isKey ? AV_PKT_FLAG_KEY : 0
    }
}

/// A reference-counted libav* buffer (`AVBufferRef`) filled from a file, with the zeroed padding
/// decoders and parsers may read past the end. Packets made with
/// ``Packet/reference(_:offset:size:pts:dts:duration:isKey:)`` share it without copying.
package final class SharedBuffer {
    let ref: UnsafeMutablePointer<AVBufferRef>
    /// Bytes of data (the padding not counted).
    package let count: Int

    /// Reads `count` bytes of the file open as `fd`, from byte `offset`. Throws `.io` naming
    /// `path` when the file ends early or the read fails.
    package init(reading fd: Int32, at offset: Int, count: Int, path: String) throws {
        let padding = Int(AV_INPUT_BUFFER_PADDING_SIZE)
        guard let b = av_buffer_alloc(count + padding) else {
            throw FFmpegError(.internalError, "\(fileName(path)): cannot allocate \(count) bytes")
        }
        let base = UnsafeMutableRawPointer(b.pointee.data!)
        memset(base + count, 0, padding)
        var done = 0
        while done < count {
            let n = pread(fd, base + done, count - done, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                var q: UnsafeMutablePointer<AVBufferRef>? = b
                av_buffer_unref(&q)
                throw FFmpegError(.io, "\(fileName(path)): short read at byte \(done) of \(count)")
            }
            done += n
        }
        ref = b
        self.count = count
    }

    deinit {
        var q: UnsafeMutablePointer<AVBufferRef>? = ref
        av_buffer_unref(&q)
    }

    /// Calls `body` with the data (valid only inside `body`).
    package func withUnsafeBytes<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        try body(UnsafeRawBufferPointer(start: ref.pointee.data, count: count))
    }
}
