import DubfarmCore
import FarmProtocol
import Foundation

/// What a stage gets for one segment besides the frames.
package struct StageContext: Sendable {
    package var task: TaskRef
    package var outputFrames: Range<Int>
    package var decodedFrames: Range<Int>
    package var frameRate: Rational
    package var audio: AudioWindow
    package var sourceFace: [UInt8]?
    /// The job's personalised weights (`submit --personalise`), if it has them: a model stage
    /// runs the segment on them instead of its own.
    package var weights: PersonalisedWeights?
    package var threads: Int
    /// The video's display rotation (degrees counter-clockwise): `frame.rotated(by: rotation)`
    /// is the picture upright, as a player shows it.
    package var rotation = 0
    /// Whether the segment was cancelled (or is being handed back): long stages poll this.
    package var isCancelled: @Sendable () -> Bool

    package init(task: TaskRef, outputFrames: Range<Int>, decodedFrames: Range<Int>, frameRate: Rational, audio: AudioWindow,
                sourceFace: [UInt8]?, threads: Int, isCancelled: @escaping @Sendable () -> Bool = { false }) {
        self.task = task
        self.outputFrames = outputFrames
        self.decodedFrames = decodedFrames
        self.frameRate = frameRate
        self.audio = audio
        self.sourceFace = sourceFace
        self.threads = threads
        self.isCancelled = isCancelled
    }
}

/// A processing stage a worker can run: makes one ``FrameProcessor`` per segment.
package protocol Stage: Sendable {
    /// The name jobs ask for (`passthrough`, `dub`, …).
    var name: String { get }
    /// The pixel layout the stage wants its frames in.
    var layout: VideoFrame.Layout { get }
    /// The model this stage holds, if any (advertised in READY).
    var model: String? { get }
    func makeProcessor(for context: StageContext) throws -> any FrameProcessor
    /// Counters the stage reports for the segment just processed (faces found, frames swapped, …).
    func statistics(of processor: any FrameProcessor) -> (framesWithFace: Int, framesSwapped: Int)
    /// Milliseconds per frame of each step of the stage for the segment just processed, in
    /// pipeline order (the worker logs them with the segment).
    func timings(of processor: any FrameProcessor) -> [(step: String, msPerFrame: Double)]
}

extension Stage {
    package var model: String? { nil }
    package func statistics(of processor: any FrameProcessor) -> (framesWithFace: Int, framesSwapped: Int) { (0, 0) }
    package func timings(of processor: any FrameProcessor) -> [(step: String, msPerFrame: Double)] { [] }
}

/// Decodes the segment's frames and encodes them unchanged.
package struct PassthroughStage: Stage {
    package init() {}
    package var name: String { "passthrough" }
    package var layout: VideoFrame.Layout { .yuv420p }
    package func makeProcessor(for context: StageContext) throws -> any FrameProcessor { PassthroughProcessor() }
}

/// Like passthrough, but takes a fixed time per segment, spread evenly over the frames it
/// decodes (as a model stage's time is, so a stopping worker has finished frames to return):
/// for scaling tests and benchmarks where the stage's cost must be known exactly.
package struct SleepStage: Stage {
    package let seconds: Double
    package init(seconds: Double) { self.seconds = seconds }
    package var name: String { "sleep" }
    package var layout: VideoFrame.Layout { .yuv420p }
    package func makeProcessor(for context: StageContext) throws -> any FrameProcessor {
        SleepProcessor(seconds: seconds, over: context)
    }
}

final class SleepProcessor: FrameProcessor {
    let secondsPerFrame: Double
    let isCancelled: @Sendable () -> Bool
    /// `seconds` for the segment of `context`, spread evenly over the frames it decodes.
    init(seconds: Double, over context: StageContext) {
        self.secondsPerFrame = seconds / Double(max(1, context.decodedFrames.count))
        self.isCancelled = context.isCancelled
    }
    func process(_ frame: VideoFrame) throws -> [VideoFrame] {
        let end = Date().addingTimeInterval(secondsPerFrame)
        while Date() < end {
            if isCancelled() { throw DubfarmError(.cancelled, "cancelled while sleeping") }
            Thread.sleep(forTimeInterval: min(0.02, max(0, end.timeIntervalSinceNow)))
        }
        return [frame]
    }
    func flush() throws -> [VideoFrame] { [] }
}

/// Fails every segment: for fault tests (a worker whose stage always breaks).
package struct FailingStage: Stage {
    /// The stage this worker advertises (`fail`, or another stage's name to pose as a broken
    /// worker of that stage, which then gets that stage's segments).
    package let name: String
    package init(advertising name: String = "fail") { self.name = name }
    package var layout: VideoFrame.Layout { .yuv420p }
    package func makeProcessor(for context: StageContext) throws -> any FrameProcessor {
        throw DubfarmError(.internalError, "the 'fail' stage fails every segment by design")
    }
}

import Foundation

/// A stage that works on the task's compressed packets directly: no decoding, no encoding.
/// The worker hands it the task and sends back what it returns.
package protocol PacketStage: Stage {
    /// The segment's output: exactly one packet per output frame, stamped with the absolute frame
    /// index (as ``SegmentRenderer`` stamps encoded frames).
    func process(_ task: TaskAssignment, context: StageContext) throws -> PacketBundle
}

/// Takes a fixed time per segment and returns the task's own packets of the segment's frames,
/// with no decoding or encoding: for scaling benchmarks, where a worker process must cost nothing
/// but its protocol traffic (64 of them fit on 2 cores). The input must be all-intra (every
/// packet a keyframe, no B-frames, e.g. `ffmpeg … -g 1 -bf 0`), so that the copied packets form a
/// valid segment; use segments without context frames (`segments.context_frames: 0`).
package struct SleepCopyStage: PacketStage {
    package let seconds: Double
    package init(seconds: Double) { self.seconds = seconds }
    package var name: String { "sleep-copy" }
    package var layout: VideoFrame.Layout { .yuv420p }
    package func makeProcessor(for context: StageContext) throws -> any FrameProcessor {
        SleepProcessor(seconds: seconds, over: context)
    }

    package func process(_ task: TaskAssignment, context: StageContext) throws -> PacketBundle {
        let output = try Self.copyOutputPackets(task)
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if context.isCancelled() { throw DubfarmError(.cancelled, "cancelled while sleeping") }
            Thread.sleep(forTimeInterval: min(0.02, max(0, end.timeIntervalSinceNow)))
        }
        return output
    }

    /// The packets of the task's output frames, restamped `pts = dts = frame index`, duration 1
    /// in the time base 1/frame rate. Throws when a frame's packet is missing or not a keyframe.
    package static func copyOutputPackets(_ task: TaskAssignment) throws -> PacketBundle {
        var byPTS: [Int64: EncodedPacket] = [:]
        for p in task.input.packets { byPTS[p.pts] = p }
        var packets: [EncodedPacket] = []
        packets.reserveCapacity(task.outputFrames.count)
        for frame in task.outputFrames {
            let i = frame - task.decodedFrames.lowerBound
            guard task.framePTS.indices.contains(i), var p = byPTS[task.framePTS[i]] else {
                throw DubfarmError(.badInput, "segment \(task.ref.segment): no packet for frame \(frame) in the task")
            }
            guard p.isKey else {
                throw DubfarmError(.unsupported, """
                    the sleep-copy stage needs an all-intra input (every frame a keyframe), but frame \(frame) \
                    of segment \(task.ref.segment) is not one; make the input with ffmpeg -g 1 -bf 0
                    """)
            }
            p.pts = Int64(frame)
            p.dts = Int64(frame)
            p.duration = 1
            packets.append(p)
        }
        var codec = task.input.codec
        codec.timeBase = task.frameRate.inverted
        return PacketBundle(codec: codec, packets: packets)
    }
}
