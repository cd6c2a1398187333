/// One planned segment: a half-open range of absolute input frame indices.
package struct SegmentSpan: Sendable, Hashable, Codable, CustomStringConvertible {
    package var index: Int
    package var frames: Range<Int>
    package init(index: Int, frames: Range<Int>) {
        self.index = index
        self.frames = frames
    }
    package var description: String { "#\(index) [\(frames.lowerBound), \(frames.upperBound))" }
}

/// Cuts a video into segments on absolute frame indices.
///
/// A segment is `round(seconds × frame rate)` frames; segment `k` starts at `k × length`, so
/// rounding never accumulates, and the last one is shorter.
package enum SegmentPlanner {
    /// Frames in one nominal segment: `round(seconds × num / den)`, at least 1.
    package static func framesPerSegment(seconds: Double, frameRate: Rational) -> Int {
        precondition(frameRate.num > 0 && frameRate.den > 0, "frame rate must be positive")
        let exact = seconds * Double(frameRate.num) / Double(frameRate.den)
        return max(1, Int(exact.rounded(.toNearestOrAwayFromZero)))
    }

    /// Splits `frameCount` frames into segments of `framesPerSegment(seconds:frameRate:)` frames.
    package static func plan(frameCount: Int, frameRate: Rational, segmentSeconds: Double) -> [SegmentSpan] {
        plan(frameCount: frameCount, segmentFrames: framesPerSegment(seconds: segmentSeconds, frameRate: frameRate))
    }

    /// Splits `frameCount` frames into segments of `segmentFrames` frames, the last one shorter.
    package static func plan(frameCount: Int, segmentFrames: Int) -> [SegmentSpan] {
        precondition(segmentFrames > 0)
        guard frameCount > 0 else { return [] }
        return stride(from: 0, to: frameCount, by: segmentFrames).enumerated().map { k, start in
            SegmentSpan(index: k, frames: start..<min(start + segmentFrames, frameCount))
        }
    }

    /// A segment cut in two after its first `done` frames, when a stopping worker returned only
    /// those (a partial result): the frames it finished and the remainder, planned as a segment
    /// of its own. `nil` unless `0 < done < frames.count` (none done is a hand-back; all done is
    /// a whole result).
    package static func split(_ frames: Range<Int>, afterFrames done: Int) -> (finished: Range<Int>, remainder: Range<Int>)? {
        guard done > 0, done < frames.count else { return nil }
        let cut = frames.lowerBound + done
        return (frames.lowerBound..<cut, cut..<frames.upperBound)
    }

    /// Whether `spans` (in any order) tile `0..<frameCount` without gap or overlap and cut it at
    /// least wherever `plan` does: the segments of a job whose plan was `plan`, some of them
    /// split by partial results since. A retried job keeps such segments and their finished work.
    package static func refines(_ spans: [Range<Int>], plan: [SegmentSpan], frameCount: Int) -> Bool {
        let sorted = spans.sorted { $0.lowerBound < $1.lowerBound }
        var next = 0
        for s in sorted {
            guard s.lowerBound == next, !s.isEmpty else { return false }
            next = s.upperBound
        }
        guard next == frameCount else { return false }
        let cuts = Set(sorted.map(\.lowerBound))
        return plan.allSatisfy { cuts.contains($0.frames.lowerBound) }
    }

    /// The frames decoded for a segment: its range plus `context` frames on each side where they exist.
    package static func contextRange(of frames: Range<Int>, context: Int, frameCount: Int) -> Range<Int> {
        max(0, frames.lowerBound - context)..<min(frameCount, frames.upperBound + context)
    }

    /// The 16 kHz sample range of the dub track covering `frames` plus `marginSeconds` on each side.
    /// The lower bound may be negative and the upper bound past the track's end: such samples are silence.
    package static func audioSamples(for frames: Range<Int>, frameRate: Rational, marginSeconds: Double) -> Range<Int64> {
        let rate = Double(AudioWindow.sampleRate)
        let fps = frameRate.value
        let lo = (Double(frames.lowerBound) / fps - marginSeconds) * rate
        let hi = (Double(frames.upperBound) / fps + marginSeconds) * rate
        return Int64(lo.rounded(.down))..<Int64(hi.rounded(.up))
    }
}
