import CFFmpeg
import DubfarmCore
#if canImport(Glibc)
import Glibc
#endif

/// Re-encodes an input once, at high quality, with keyframes where segments start.
///
/// Used when an input's keyframes lie far apart (``PacketIndex/longestKeyframeInterval``), so no
/// segment task has to carry a long run of reference packets.
package enum Recut {
    /// 8-bit formats kept as they are; anything else becomes yuv420p.
    static let keptFormats: Set<String> = ["yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"]

    /// How source frames map to the output's constant-rate frames.
    package enum Timing: Sendable, Hashable {
        /// Output frame `i` is source frame `i` (presentation order): the frame count is kept and
        /// a variable-frame-rate source plays at `frameRate` (how the farm numbers frames).
        case frameIndex
        /// Output frame `n` shows the source frame on screen at time `n / frameRate` (frames are
        /// repeated or dropped): the source's timeline is kept, as for a phone's variable-rate
        /// video (see ``VideoStreamInfo/isVariableFrameRate``).
        case timestamps
    }

    /// Re-encodes `input`'s video into `output` (container from its extension; MP4 when unknown):
    /// libx264 crf `crf` (default 12), preset `preset`, constant frame rate `frameRate` with
    /// frame `i` at pts `i`, an IDR keyframe at every output index in `keyframesAt`, rotation
    /// kept, no audio. Written to a temporary name, fsynced and renamed. Returns the number of
    /// frames written.
    @discardableResult
    package static func recut(input: String, output: String, frameRate: Rational, keyframesAt: [Int],
                             timing: Timing = .frameIndex,
                             crf: Int = 12, preset: String = "veryfast", threads: Int = 0) throws -> Int {
        _ = ffmpegSetup
        let name = fileName(input)
        let source = try SourceIndexer.index(path: input)
        let info = source.info
        let pixfmt = keptFormats.contains(info.pixelFormat) ? info.pixelFormat : "yuv420p"
        let keys = Set(keyframesAt)
        let tmp = MediaFile.temporaryPath(for: output)
        do {
            var frames = 0
            var written: Int64 = 0
            do {
                let out = try OutputFile(tempPath: tmp, finalPath: output)
                let settings = EncoderSettings(codec: "libx264", crf: crf, preset: preset, pixelFormat: pixfmt)
                let enc = try VideoEncoder(settings: settings, width: info.width, height: info.height, frameRate: frameRate,
                                           sampleAspect: source.codec.sampleAspect, color: source.codec, threads: threads,
                                           globalHeader: out.wantsGlobalHeader, what: name)
                let st = try out.addStream(for: enc.ctx)
                st.pointee.avg_frame_rate = avRational(frameRate)
                if info.rotation != 0 { _ = cffmpeg_stream_set_rotation(st, Double(info.rotation)) }
                try out.begin()
                let encTB = enc.ctx.pointee.time_base
                let write: (UnsafeMutablePointer<AVPacket>) throws -> Void = { p in try out.write(p, stream: st, from: encTB) }
                let converted = Frame()
                var scaler: Scaler? = nil
                func emit(_ f: UnsafeMutablePointer<AVFrame>, _ n: Int64) throws {
                    f.pointee.pts = n
                    f.pointee.pict_type = keys.contains(Int(n)) ? AV_PICTURE_TYPE_I : AV_PICTURE_TYPE_NONE
                    try enc.encode(f, write)
                    written += 1
                }
                // Timestamp mode: the source timeline [start, end) in stream ticks, and the frame held back.
                let tb = info.timeBase
                let start = source.index.entries.map(\.pts).min() ?? 0
                let end = source.index.entries.map { $0.pts + max($0.duration, 0) }.max() ?? 0
                let held = Frame()
                /// Emits the held frame for every output instant n / frameRate before `t` (stream ticks).
                func emitHeld(until t: Int64) throws {
                    // n / fps < (t - start) * tb  <=>  n * fps.den * tb.den < (t - start) * tb.num * fps.num
                    let rhs = (t - start) * Int64(tb.num) * Int64(frameRate.num)
                    while written * Int64(frameRate.den) * Int64(tb.den) < rhs {
                        try emit(held.f, written)  // only pts and picture type change: no copy
                    }
                }
                frames = try VideoDecoder.forEachDecodedFrame(path: input, threads: threads) { frame, index, _ in
                    var f = frame.f
                    if f.pointee.format != enc.pixelFormat.rawValue {
                        if scaler == nil {
                            scaler = try Scaler(srcWidth: Int(f.pointee.width), srcHeight: Int(f.pointee.height),
                                                srcFormat: AVPixelFormat(rawValue: f.pointee.format),
                                                dstWidth: info.width, dstHeight: info.height, dstFormat: enc.pixelFormat, what: name)
                            converted.f.pointee.format = enc.pixelFormat.rawValue
                            converted.f.pointee.width = Int32(info.width)
                            converted.f.pointee.height = Int32(info.height)
                            let r = av_frame_get_buffer(converted.f, 0)
                            guard r >= 0 else { throw DubfarmError(.internalError, "\(name): out of memory") }
                        }
                        let r = av_frame_make_writable(converted.f)
                        guard r >= 0 else { throw DubfarmError(.internalError, "\(name): out of memory") }
                        cffmpeg_scale_frame_to_frame(scaler!.sws, f, converted.f)
                        f = converted.f
                    }
                    switch timing {
                    case .frameIndex:
                        try emit(f, Int64(index))
                    case .timestamps:
                        // Frame `index` is on screen from its pts until the next frame's: emit the
                        // held previous frame for every output instant before this one's start.
                        let pts = f.pointee.best_effort_timestamp != noPTS ? f.pointee.best_effort_timestamp : f.pointee.pts
                        if pts != noPTS && held.f.pointee.data.0 != nil { try emitHeld(until: pts) }
                        av_frame_unref(held.f)
                        let r = av_frame_ref(held.f, f)
                        guard r >= 0 else { throw DubfarmError(.internalError, "\(name): out of memory") }
                    }
                    return true
                }
                if timing == .timestamps && held.f.pointee.data.0 != nil { try emitHeld(until: end) }
                try enc.encode(nil, write)
                try out.finish()
            }
            guard frames == info.frameCount else {
                throw DubfarmError(.badInput, "\(name): decoded \(frames) frames but the file holds \(info.frameCount); it is damaged")
            }
            if timing == .timestamps { frames = Int(written) }
            guard frames > 0 else { throw DubfarmError(.badInput, "\(name): no frames to write") }
            try MediaFile.fsync(path: tmp)
            try MediaFile.commit(tmp, to: output)
            return frames
        } catch {
            unlink(tmp)
            throw error
        }
    }
}
