import CFFmpeg
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Quiets libav*'s own logging once: failures reach callers as ``FFmpegError``s instead.
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

/// A failed write of the file `name`: `.diskFull` when the disk is full, else `.io`.
func writeError(_ code: Int32, _ name: String, _ what: String) -> FFmpegError {
    if code == averrorENOSPC {
        return FFmpegError(.diskFull, "\(name): the disk is full (no space left while \(what))")
    }
    return FFmpegError(.io, "\(name): \(what) failed (\(avErrorString(code)))")
}

/// A fraction as libav* uses them for time bases, frame rates and aspect ratios.
package struct Ratio: Sendable, Hashable {
    package var num: Int
    package var den: Int
    package init(_ num: Int, _ den: Int) {
        self.num = num
        self.den = den
    }
    /// Whether both parts are positive (libav* says 0/0 or 0/1 for "unknown").
    package var isPositive: Bool { num > 0 && den > 0 }

    init(_ r: AVRational) { self.init(Int(r.num), Int(r.den)) }
    var av: AVRational { AVRational(num: Int32(num), den: Int32(den)) }

    /// Compares timestamp `a` in time base `ta` with `b` in `tb` without rounding: -1, 0 or 1.
    package static func compare(_ a: Int64, _ ta: Ratio, _ b: Int64, _ tb: Ratio) -> Int {
        Int(av_compare_ts(a, ta.av, b, tb.av))
    }
}

/// The value libav* uses for "no timestamp".
package let noTimestamp: Int64 = cffmpeg_nopts()

func pixelFormatName(_ f: AVPixelFormat) -> String {
    av_get_pix_fmt_name(f).map { String(cString: $0) } ?? "unknown"
}

/// libav*'s pixel format for `name`, or nil when it does not know the name.
func pixelFormat(named name: String) -> AVPixelFormat? {
    let f = av_get_pix_fmt(name)
    return f == AV_PIX_FMT_NONE ? nil : f
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
            throw FFmpegError(.unsupported, "\(what): cannot convert pixel format \(pixelFormatName(srcFormat)) to \(pixelFormatName(dstFormat))")
        }
        sws = s
    }
    deinit { sws_freeContext(sws) }
}
