// MediaPipeline: the media operations of the farm, in the farm's types: probing, indexing,
// cutting, rendering, re-cutting, audio decoding and stitching.
//
// Built on the FFmpeg module's owning wrappers (it never sees a libav* pointer) and on
// DurableFiles for what it writes. Every operation here throws `DubfarmError`s: the wrappers'
// `FFmpegError`s are turned into them at this module's edge (FFmpegBridge.swift).
//
// The flow of one job:
//
//   coordinator  MediaProbe.probe(path:)                    facts + clear errors for bad input
//                SourceIndexer.index(path:)                 one demux pass -> PacketIndex (store it)
//                RecutReason.decide(...) -> Recut.recut(...) once, re-index (when the input needs it)
//                SourceVideo(path:codec:index:)             opened once per job
//                SegmentCutter.cut(_:frames:context:)       PacketBundle + Window per task (pread)
//                DubAudio.decodePCM(path:) + AudioWindow.slice(pcm:range:)   lip-sync audio per task
//   worker       SegmentRenderer.render(input:window:outputFrames:...)       exactly the segment's frames,
//                                                           returned in RESULT
//   coordinator  ResultLog.write (DurableFiles)             the result appended to the job's log
//                Stitcher.stitch(StitchRequest)             stream copy + dub encoded once as AAC,
//                                                           frame count verified, temp+fsync+rename
import DubfarmCore

extension AudioWindow {
    /// The samples `range` (absolute 16 kHz sample indices) of a whole decoded dub track, with
    /// silence where the range lies before the track's start or after its end.
    package static func slice(pcm: [Float], range: Range<Int64>) -> AudioWindow {
        var samples = [Float](repeating: 0, count: range.count)
        let lo = max(range.lowerBound, 0), hi = min(range.upperBound, Int64(pcm.count))
        if lo < hi {
            let dst = Int(lo - range.lowerBound)
            samples.withUnsafeMutableBufferPointer { out in
                pcm.withUnsafeBufferPointer { src in
                    out.baseAddress!.advanced(by: dst).update(from: src.baseAddress!.advanced(by: Int(lo)), count: Int(hi - lo))
                }
            }
        }
        return AudioWindow(startSample: range.lowerBound, samples: samples)
    }
}

/// Why an input is re-encoded once before it is cut (``Recut``), as planning decides it.
package enum RecutReason: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Unevenly spaced frames: re-timed at the nominal rate on the source's own timeline, so the
    /// output lasts as long as the input (frames repeated where the source held one longer).
    case variableFrameRate
    /// Keyframes too far apart for segment tasks of bounded size (or none at the start).
    case keyframesApart(longest: Int, limit: Int)
    /// The container hides frames (an edit list trims the start): re-encoded with exactly the
    /// frames a player shows.
    case hiddenFrames(Int)
    /// The container lists its streams only as they are read (an MPEG program stream), so a
    /// task's packets cannot be found by seeking: re-encoded into a file that can be cut.
    case streamsUnlisted
    /// The packets carry no presentation timestamps (a raw elementary stream such as `.h264`),
    /// which a task relies on to tell its frames apart: re-encoded with them.
    case noTimestamps

    package var description: String {
        switch self {
        case .variableFrameRate: return "variable frame rate: re-timed at the nominal rate on the input's own timeline"
        case .keyframesApart(let longest, let limit):
            return "keyframes up to \(longest) frames apart (limit \(limit)): re-encoded with a keyframe where each segment starts"
        case .hiddenFrames(let n):
            return "\(n) frame\(n == 1 ? " is" : "s are") never shown (an edit list hides \(n == 1 ? "it" : "them"), or the stream starts before its first keyframe): re-encoded on the timeline a player shows"
        case .streamsUnlisted:
            return "the container lists its streams only as they are read (as MPEG program streams do): re-encoded so tasks can be cut from it"
        case .noTimestamps:
            return "the stream has no timestamps (a raw elementary stream): re-encoded with them"
        }
    }

    /// Whether the re-cut keeps the input's timeline (``Recut/Timing/timestamps``): frames
    /// repeated or dropped so that output frame n shows what is on screen at n / frame rate.
    package var retimes: Bool {
        switch self {
        case .variableFrameRate, .hiddenFrames: return true
        case .keyframesApart, .streamsUnlisted, .noTimestamps: return false
        }
    }

    /// Planning's decision for an input with `info` and `index`, keyframes allowed at most
    /// `maxKeyframeSeconds` apart; nil: cut as it is.
    package static func decide(info: VideoStreamInfo, index: PacketIndex, maxKeyframeSeconds: Double) -> RecutReason? {
        if info.isVariableFrameRate { return .variableFrameRate }
        if info.hiddenFrames > 0 { return .hiddenFrames(info.hiddenFrames) }
        if !info.listedInHeader { return .streamsUnlisted }
        if !info.hasPresentationTimestamps { return .noTimestamps }
        let limit = Int((maxKeyframeSeconds * info.frameRate.value).rounded(.up))
        return SegmentCutter.needsRecut(index, maxInterval: limit) ? .keyframesApart(longest: index.longestKeyframeInterval, limit: limit) : nil
    }

    /// The frames the farm will number for such an input: the input's, or when the re-cut
    /// keeps its timeline (``retimes``), the frames that cover it at the nominal rate.
    package static func frameCount(_ info: VideoStreamInfo, _ reason: RecutReason?) -> Int {
        reason?.retimes == true ? max(1, info.timelineFrames) : info.frameCount
    }
}

/// Cutting a job's input into segment tasks (coordinator side).
package enum SegmentCutter {
    /// The packets, decoded-frame range and timestamps a worker needs for `frames`, read from `source`.
    package static func cut(_ source: SourceVideo, frames: Range<Int>, context: Int) throws -> (bundle: PacketBundle, window: PacketIndex.Window) {
        let window = source.index.window(for: frames, context: context)
        return (try source.bundle(for: window), window)
    }

    /// Whether an input must be re-cut (see ``Recut``) before it can be cut into tasks of bounded
    /// size: it does not start with a keyframe, or two keyframes lie more than `maxInterval` frames apart.
    package static func needsRecut(_ index: PacketIndex, maxInterval: Int) -> Bool {
        !index.startsWithKeyframe || index.longestKeyframeInterval > maxInterval
    }

}
