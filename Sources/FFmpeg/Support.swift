// The FFmpeg module is the only code that touches libav*'s raw pointers. Everything here is
// internal; the public API (MediaProbe, SourceIndexer, SourceVideo, SegmentRenderer, Stitcher,
// Recut, DubAudio, VideoDecoder, ImageLoader) speaks DubfarmCore's Swift types only.
import CFFmpeg
import DubfarmCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Quiets libav*'s own logging once: failures reach callers as `DubfarmError`s instead.
let ffmpegSetup: Void = {
    av_log_set_level(AV_LOG_FATAL)
    cffmpeg_capture_log()
}()

/// FFmpeg's last error-level log line on this thread (trimmed), or nil. Clear it with
/// `cffmpeg_clear_last_log()` before the call whose failure it should explain.
func lastFFmpegLogLine() -> String? {
    let raw = String(cString: cffmpeg_last_log())
    let line = String(raw.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    return line.isEmpty ? nil : line
}

/// FFmpeg's explanation of error `code`: its last log line when there is one (more precise),
/// then the code's text.
func avErrorReason(_ code: Int32) -> String {
    let text = avErrorString(code)
    guard let line = lastFFmpegLogLine(), line != text else { return text }
    return "\(line); \(text)"
}

/// The last path component, used in every error message (the user knows their file by name).
func fileName(_ path: String) -> String {
    path.split(separator: "/").last.map(String.init) ?? path
}

/// FFmpeg's text for an error code.
func avErrorString(_ code: Int32) -> String {
    var buf = [CChar](repeating: 0, count: 256)
    av_strerror(code, &buf, buf.count)
    let bytes = buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}

let averrorEOF = cffmpeg_averror_eof()
let averrorEAGAIN = cffmpeg_averror(EAGAIN)
let averrorENOSPC = cffmpeg_averror(ENOSPC)
let noPTS = cffmpeg_nopts()

/// Maps a failed write to `.diskFull` when the disk is full, else `.io`.
func writeError(_ code: Int32, _ name: String, _ what: String) -> DubfarmError {
    if code == averrorENOSPC {
        return DubfarmError(.diskFull, "\(name): the disk is full (no space left while \(what))")
    }
    return DubfarmError(.io, "\(name): \(what) failed (\(avErrorString(code)))")
}

func rational(_ r: AVRational) -> Rational { Rational(Int(r.num), Int(r.den)) }
func avRational(_ r: Rational) -> AVRational { AVRational(num: Int32(r.num), den: Int32(r.den)) }

// MARK: Owned FFmpeg objects

/// An `AVPacket`, freed on deinit.
final class Packet {
    let p: UnsafeMutablePointer<AVPacket>
    init() {
        guard let p = av_packet_alloc() else { fatalError("out of memory allocating an AVPacket") }
        self.p = p
    }
    deinit {
        var q: UnsafeMutablePointer<AVPacket>? = p
        av_packet_free(&q)
    }
    /// Replaces the contents with a padded copy of `data` and the given timing.
    func load(_ packet: EncodedPacket) throws {
        av_packet_unref(p)
        let r = av_new_packet(p, Int32(packet.data.count))
        guard r >= 0 else { throw DubfarmError(.internalError, "cannot allocate a packet of \(packet.data.count) bytes (\(avErrorString(r)))") }
        if !packet.data.isEmpty {
            packet.data.withUnsafeBufferPointer { src in
                _ = memcpy(p.pointee.data, src.baseAddress!, src.count)
            }
        }
        p.pointee.pts = packet.pts
        p.pointee.dts = packet.dts
        p.pointee.duration = packet.duration
        p.pointee.flags = packet.isKey ? AV_PKT_FLAG_KEY : 0
    }
    /// The packet as Swift bytes.
    func encodedPacket() -> EncodedPacket {
        let n = Int(p.pointee.size)
        let data = n > 0 ? [UInt8](UnsafeBufferPointer(start: p.pointee.data, count: n)) : []
        return EncodedPacket(pts: p.pointee.pts, dts: p.pointee.dts, duration: p.pointee.duration,
                             isKey: (p.pointee.flags & AV_PKT_FLAG_KEY) != 0, data: data)
    }
}

/// An `AVFrame`, freed on deinit.
final class Frame {
    let f: UnsafeMutablePointer<AVFrame>
    init() {
        guard let f = av_frame_alloc() else { fatalError("out of memory allocating an AVFrame") }
        self.f = f
    }
    deinit {
        var q: UnsafeMutablePointer<AVFrame>? = f
        av_frame_free(&q)
    }
    func plane(_ i: Int) -> UnsafeMutablePointer<UInt8>? { cffmpeg_frame_plane(f, Int32(i)) }
    func linesize(_ i: Int) -> Int { Int(cffmpeg_frame_linesize(f, Int32(i))) }
}

/// An opened input file (`AVFormatContext`), closed on deinit.
final class InputFile {
    let ctx: UnsafeMutablePointer<AVFormatContext>
    let path: String
    let name: String
    let fileSize: Int64

    /// Opens `path`, with clear errors for a missing, empty or unreadable file.
    init(path: String, findStreamInfo: Bool = true) throws {
        _ = ffmpegSetup
        let name = fileName(path)
        var st = stat()
        if stat(path, &st) != 0 {
            let e = errno
            if e == ENOENT { throw DubfarmError(.notFound, "\(name): file not found") }
            throw DubfarmError(.io, "\(name): cannot read the file (\(String(cString: strerror(e))))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw DubfarmError(.badInput, "\(name): not a regular file")
        }
        guard st.st_size > 0 else { throw DubfarmError(.badInput, "\(name): the file is empty") }
        var c: UnsafeMutablePointer<AVFormatContext>? = nil
        cffmpeg_clear_last_log()
        let r = avformat_open_input(&c, path, nil, nil)
        guard r >= 0, let c else {
            throw DubfarmError(.badInput, "\(name): not a media file FFmpeg can read, or it is damaged or truncated (\(avErrorReason(r)))")
        }
        self.ctx = c
        self.path = path
        self.name = name
        self.fileSize = Int64(st.st_size)
        if findStreamInfo {
            cffmpeg_clear_last_log()
            let r2 = avformat_find_stream_info(c, nil)
            if r2 < 0 {
                throw DubfarmError(.badInput, "\(name): cannot read the streams of the file; it is damaged or not a media file (\(avErrorReason(r2)))")
            }
        }
    }
    deinit {
        var c: UnsafeMutablePointer<AVFormatContext>? = ctx
        avformat_close_input(&c)
    }

    var streamCount: Int { Int(ctx.pointee.nb_streams) }
    func stream(_ i: Int) -> UnsafeMutablePointer<AVStream> { ctx.pointee.streams[i]! }
    var formatName: String { String(cString: ctx.pointee.iformat.pointee.name) }

    /// The first real video stream (cover art excluded), if any.
    func videoStreamIndex() -> Int? {
        for i in 0..<streamCount {
            let s = stream(i)
            if s.pointee.codecpar.pointee.codec_type == AVMEDIA_TYPE_VIDEO
                && (s.pointee.disposition & AV_DISPOSITION_ATTACHED_PIC) == 0 {
                return i
            }
        }
        return nil
    }

    /// The best audio stream, if any.
    func audioStreamIndex() -> Int? {
        let r = av_find_best_stream(ctx, AVMEDIA_TYPE_AUDIO, -1, -1, nil, 0)
        return r >= 0 ? Int(r) : nil
    }

    /// Makes the demuxer skip every stream but `keep`.
    func discardAll(except keep: Int) {
        for i in 0..<streamCount where i != keep { stream(i).pointee.discard = AVDISCARD_ALL }
    }
}

/// An `AVCodecContext`, freed on deinit.
final class CodecContext {
    let ctx: UnsafeMutablePointer<AVCodecContext>
    init(codec: UnsafePointer<AVCodec>) {
        guard let c = avcodec_alloc_context3(codec) else { fatalError("out of memory allocating an AVCodecContext") }
        ctx = c
    }
    deinit {
        var c: UnsafeMutablePointer<AVCodecContext>? = ctx
        avcodec_free_context(&c)
    }
}

/// A swscale context for one fixed conversion, freed on deinit.
final class Scaler {
    let sws: OpaquePointer
    init(srcWidth: Int, srcHeight: Int, srcFormat: AVPixelFormat,
         dstWidth: Int, dstHeight: Int, dstFormat: AVPixelFormat, what: String) throws {
        guard let s = sws_getContext(Int32(srcWidth), Int32(srcHeight), srcFormat,
                                     Int32(dstWidth), Int32(dstHeight), dstFormat,
                                     SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, nil, nil, nil) else {
            throw DubfarmError(.unsupported, "\(what): cannot convert pixel format \(pixelFormatName(srcFormat)) to \(pixelFormatName(dstFormat))")
        }
        sws = s
    }
    deinit { sws_freeContext(sws) }
}

func pixelFormatName(_ f: AVPixelFormat) -> String {
    av_get_pix_fmt_name(f).map { String(cString: $0) } ?? "unknown"
}

// MARK: Codec parameters <-> Swift

/// Reads a stream's codec parameters into DubfarmCore's `CodecParameters`.
func codecParameters(of st: UnsafeMutablePointer<AVStream>, frameRate: Rational) -> CodecParameters {
    let par = st.pointee.codecpar.pointee
    let extradata: [UInt8] = (par.extradata != nil && par.extradata_size > 0)
        ? [UInt8](UnsafeBufferPointer(start: par.extradata, count: Int(par.extradata_size))) : []
    return CodecParameters(
        codecName: String(cString: avcodec_get_name(par.codec_id)), extradata: extradata,
        width: Int(par.width), height: Int(par.height),
        pixelFormat: pixelFormatName(AVPixelFormat(rawValue: par.format)),
        timeBase: rational(st.pointee.time_base), frameRate: frameRate,
        sampleAspect: rational(par.sample_aspect_ratio), profile: Int(par.profile), level: Int(par.level),
        colorRange: Int(par.color_range.rawValue), colorSpace: Int(par.color_space.rawValue),
        colorPrimaries: Int(par.color_primaries.rawValue), colorTransfer: Int(par.color_trc.rawValue))
}

/// FFmpeg's codec id for a codec name such as `h264`.
func codecID(named name: String) -> AVCodecID? {
    guard let d = avcodec_descriptor_get_by_name(name) else { return nil }
    return d.pointee.id
}

/// Writes `p` into `par` (a video stream's parameters), replacing its extradata.
func fill(_ par: UnsafeMutablePointer<AVCodecParameters>, from p: CodecParameters, what: String) throws {
    guard let id = codecID(named: p.codecName) else {
        throw DubfarmError(.unsupported, "\(what): unknown video codec '\(p.codecName)'")
    }
    par.pointee.codec_type = AVMEDIA_TYPE_VIDEO
    par.pointee.codec_id = id
    par.pointee.codec_tag = 0
    if par.pointee.extradata != nil { av_freep(&par.pointee.extradata) }
    par.pointee.extradata_size = 0
    if !p.extradata.isEmpty {
        guard let buf = av_mallocz(p.extradata.count + Int(AV_INPUT_BUFFER_PADDING_SIZE)) else {
            throw DubfarmError(.internalError, "\(what): out of memory")
        }
        p.extradata.withUnsafeBufferPointer { _ = memcpy(buf, $0.baseAddress!, $0.count) }
        par.pointee.extradata = buf.assumingMemoryBound(to: UInt8.self)
        par.pointee.extradata_size = Int32(p.extradata.count)
    }
    par.pointee.width = Int32(p.width)
    par.pointee.height = Int32(p.height)
    par.pointee.format = av_get_pix_fmt(p.pixelFormat).rawValue
    par.pointee.sample_aspect_ratio = avRational(p.sampleAspect)
    par.pointee.profile = Int32(p.profile)
    par.pointee.level = Int32(p.level)
    par.pointee.color_range = AVColorRange(rawValue: UInt32(p.colorRange))
    par.pointee.color_space = AVColorSpace(rawValue: UInt32(p.colorSpace))
    par.pointee.color_primaries = AVColorPrimaries(rawValue: UInt32(p.colorPrimaries))
    par.pointee.color_trc = AVColorTransferCharacteristic(rawValue: UInt32(p.colorTransfer))
}

// MARK: Files

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
    static func withOpenFile<T>(_ path: String, _ body: (_ fd: Int32, _ size: Int) throws -> T) throws -> T {
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
