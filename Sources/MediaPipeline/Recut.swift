import DubfarmCore
import DurableFiles
import FFmpeg
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
        try farmErrors {
            try recutFrames(input: input, output: output, frameRate: frameRate, keyframesAt: keyframesAt, timing: timing,
                            crf: crf, preset: preset, threads: threads)
        }
    }

    private static func recutFrames(input: String, output: String, frameRate: Rational, keyframesAt: [Int], timing: Timing,
                                    crf: Int, preset: String, threads: Int) throws -> Int {
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
                let enc = try VideoEncoder(settings, width: info.width, height: info.height, frameRate: frameRate,
                                           sampleAspect: source.codec.sampleAspect, color: VideoParameters(source.codec),
                                           threads: threads, globalHeader: out.wantsGlobalHeader, what: name)
                let st = try out.addStream(for: enc, frameRate: Ratio(frameRate))
                if info.rotation != 0 { try out.setRotation(st, degrees: info.rotation) }
                try out.begin()
                let encTB = enc.timeBase
                let write: (Packet) throws -> Void = { p in try out.write(p, to: st, from: encTB) }
                let converter = FrameConverter(width: info.width, height: info.height, what: name)
                let converted = Frame()
                func emit(_ f: Frame, _ n: Int64) throws {
                    f.pts = n
                    f.forcesKeyframe = keys.contains(Int(n))
                    try enc.encode(f, write)
                    written += 1
                }
                // Timestamp mode: the first shown frame's time in stream ticks, and the frame held back.
                let tb = info.timeBase
                let start = info.timeline.lowerBound
                let held = Frame()
                /// Emits the held frame for every output instant n / frameRate before `t` (stream ticks).
                func emitHeld(until t: Int64) throws {
                    // n / fps < (t - start) * tb  <=>  n * fps.den * tb.den < (t - start) * tb.num * fps.num
                    let rhs = (t - start) * Int64(tb.num) * Int64(frameRate.num)
                    while written * Int64(frameRate.den) * Int64(tb.den) < rhs {
                        try emit(held, written)  // only pts and picture type change: no copy
                    }
                }
                frames = try VideoDecoder.forEachDecodedFrame(path: input, threads: threads) { frame, index, _ in
                    let f = try converter.convert(frame, for: enc, scratch: converted)
                    switch timing {
                    case .frameIndex:
                        try emit(f, Int64(index))
                    case .timestamps:
                        // Frame `index` is on screen from its pts until the next frame's: emit the
                        // held previous frame for every output instant before this one's start.
                        let pts = frame.presentationTime
                        if pts != noTimestamp && held.hasData { try emitHeld(until: pts) }
                        try held.reference(f)
                    }
                    return true
                }
                // The last frame, for every instant up to the timeline's end (VideoStreamInfo.timelineFrames).
                while timing == .timestamps && held.hasData && written < Int64(info.timelineFrames) { try emit(held, written) }
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
