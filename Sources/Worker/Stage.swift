import DubfarmCore
import FarmProtocol

/// What a stage gets for one segment besides the frames.
public struct StageContext: Sendable {
    public var task: TaskRef
    public var outputFrames: Range<Int>
    public var decodedFrames: Range<Int>
    public var frameRate: Rational
    public var audio: AudioWindow
    public var sourceFace: [UInt8]?
    public var threads: Int
    /// Whether the segment was cancelled (or is being handed back): long stages poll this.
    public var isCancelled: @Sendable () -> Bool

    public init(task: TaskRef, outputFrames: Range<Int>, decodedFrames: Range<Int>, frameRate: Rational, audio: AudioWindow,
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
public protocol Stage: Sendable {
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
    public var model: String? { nil }
    public func statistics(of processor: any FrameProcessor) -> (framesWithFace: Int, framesSwapped: Int) { (0, 0) }
    public func timings(of processor: any FrameProcessor) -> [(step: String, msPerFrame: Double)] { [] }
}

/// Decodes the segment's frames and encodes them unchanged.
public struct PassthroughStage: Stage {
    public init() {}
    public var name: String { "passthrough" }
    public var layout: VideoFrame.Layout { .yuv420p }
    public func makeProcessor(for context: StageContext) throws -> any FrameProcessor { PassthroughProcessor() }
}

/// Like passthrough, but takes a fixed time per segment before encoding: for scaling tests and
/// benchmarks where the stage's cost must be known exactly.
public struct SleepStage: Stage {
    public let seconds: Double
    public init(seconds: Double) { self.seconds = seconds }
    public var name: String { "sleep" }
    public var layout: VideoFrame.Layout { .yuv420p }
    public func makeProcessor(for context: StageContext) throws -> any FrameProcessor {
        SleepProcessor(seconds: seconds, isCancelled: context.isCancelled)
    }
}

final class SleepProcessor: FrameProcessor {
    let seconds: Double
    let isCancelled: @Sendable () -> Bool
    var slept = false
    init(seconds: Double, isCancelled: @escaping @Sendable () -> Bool) {
        self.seconds = seconds
        self.isCancelled = isCancelled
    }
    func process(_ frame: VideoFrame) throws -> [VideoFrame] {
        if !slept {
            slept = true
            let end = Date().addingTimeInterval(seconds)
            while Date() < end {
                if isCancelled() { throw DubfarmError(.cancelled, "cancelled while sleeping") }
                Thread.sleep(forTimeInterval: min(0.02, max(0, end.timeIntervalSinceNow)))
            }
        }
        return [frame]
    }
    func flush() throws -> [VideoFrame] { [] }
}

/// Fails every segment: for fault tests (a worker whose stage always breaks).
public struct FailingStage: Stage {
    /// The stage this worker advertises (`fail`, or another stage's name to pose as a broken
    /// worker of that stage, which then gets that stage's segments).
    public let name: String
    public init(advertising name: String = "fail") { self.name = name }
    public var layout: VideoFrame.Layout { .yuv420p }
    public func makeProcessor(for context: StageContext) throws -> any FrameProcessor {
        throw DubfarmError(.internalError, "the 'fail' stage fails every segment by design")
    }
}

import Foundation
